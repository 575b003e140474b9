"""The one owner of a sweep's on-disk layout: file names, where a sweep's storage is, the
driver's state file, reading a trial's files, and the rule that ranks trials.

On disk (STORAGE is ``--storage-path``, else ``$SWEEP_STORAGE``, else ./sweep_results)::

    STORAGE/NAME/                    Ray Tune's experiment dir (local, NFS or s3://)
        trial_<id>/params.json       the sampled values              (written by Ray Tune)
        trial_<id>/result.json       one JSON result per line        (written by Ray Tune)
        trial_<id>/error.txt         present when the trial failed   (written by Ray Tune)
        trial_<id>/checkpoint_NNNNNN/model.ckpt   a Lightning checkpoint (sweeps/execution/trial.py)
        trial_<id>/checkpoint_NNNNNN/running_best.json  its report's step and objective and the
                                     trial's running best then (restored on resume)
    STATE/NAME/sweep.json            driver state: parent run, study, objective mode, horizon
    STATE/NAME/optuna.db             the Optuna study (sqlite, so Optuna Dashboard works)
    STATE/NAME/report/               the end-of-sweep report
    STATE/NAME/driver.lock           the running driver's pid and host (one driver per sweep)

STATE is ``$SWEEP_STATE_DIR`` when set, else STORAGE when it is local, else ~/sweep_state
(object storage cannot hold a sqlite file; on a cluster the driver runs on the head node).

Imports neither Ray nor MLflow, so the listening app and the CLIs read a sweep cheaply."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vae.metric_table import rank_key

STORAGE_ENV = "SWEEP_STORAGE"
STATE_DIR_ENV = "SWEEP_STATE_DIR"
DEFAULT_STORAGE = "sweep_results"
REMOTE_STATE_ROOT = "~/sweep_state"
STATE_FILE = "sweep.json"
OPTUNA_DB = "optuna.db"
REPORT_DIR = "report"
CHECKPOINT_FILE = "model.ckpt"
# Ray Tune's files in a trial dir (named by sweeps/execution/driver.py's trial_dirname_creator).
TRIAL_DIR_PREFIX = "trial_"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILES = ("error.txt", "error.pkl")
CHECKPOINT_DIR_GLOB = "checkpoint_*"
OBJECTIVE = "objective"  # the scalar of this validation
BEST_OBJECTIVE = "best_objective"  # the trial's best objective so far: what every tool ranks by
BEST_STEP = "best_step"  # the training step where the trial reached it
RUNNING_BEST_FILE = "running_best.json"  # in each Tune checkpoint folder, beside model.ckpt
DRIVER_LOCK = "driver.lock"
# A sweep name is one folder name: no separators, no leading dot (so never `..`), bounded length.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MODES = ("min", "max")
OUTCOMES = ("completed", "pruned", "failed")

T = TypeVar("T")


class LayoutError(Exception):
    """A sweep's files are missing or not what this layout expects (the message names the file)."""


# ---- where a sweep lives -------------------------------------------------------------------------

def default_storage() -> str:
    """``$SWEEP_STORAGE``, else ./sweep_results: what every command uses without --storage-path."""
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def resolve_storage(storage_path: str | None = None) -> str:
    """``storage_path`` (the --storage-path flag), else :func:`default_storage`; a local path made
    absolute (Ray runs trials in other directories), a URI (s3://, gs://) left as it is."""
    chosen = storage_path or default_storage()
    return chosen if is_uri(chosen) else str(Path(chosen).expanduser().resolve())


def is_uri(storage_path: str) -> bool:
    return "://" in storage_path


def check_name(name: str) -> str:
    """``name`` when it is a safe sweep name; a LayoutError saying the rule otherwise."""
    if not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 60 else name[:60] + "…"
        raise LayoutError(f"sweep name {shown!r}: expected 1-100 characters of letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    return name


def trial_dirname(trial_id: str) -> str:
    """Short, stable trial dir names (Ray's default names embed every searched value)."""
    return f"{TRIAL_DIR_PREFIX}{trial_id}"


def trial_id_of(trial_dir: str | Path) -> str:
    return Path(trial_dir).name.removeprefix(TRIAL_DIR_PREFIX)


@dataclass(frozen=True)
class SweepPaths:
    """Where one sweep's results and driver state are."""

    storage_path: str  # absolute local path or a URI (s3://, gs://) Ray can write to
    name: str

    @classmethod
    def resolve(cls, storage_path: str | None, name: str) -> SweepPaths:
        """From a --storage-path value (None: $SWEEP_STORAGE, then the default); the name must
        pass :func:`check_name` (a name is a folder under the storage: it must not escape it)."""
        return cls(resolve_storage(storage_path), check_name(name))

    @property
    def is_local(self) -> bool:
        return not is_uri(self.storage_path)

    @property
    def experiment_dir(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def state_dir(self) -> Path:
        """Driver-side state (see the module docstring for where)."""
        if os.environ.get(STATE_DIR_ENV):
            return Path(os.environ[STATE_DIR_ENV]).expanduser().resolve() / self.name
        if self.is_local:
            return Path(self.experiment_dir)
        return Path(REMOTE_STATE_ROOT).expanduser() / self.name

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def lock_file(self) -> Path:
        return self.state_dir / DRIVER_LOCK

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.state_dir / OPTUNA_DB}"

    @property
    def report_dir(self) -> Path:
        return self.state_dir / REPORT_DIR

    def local_experiment_dir(self) -> Path:
        """The experiment dir as a local folder; an error for object storage."""
        return local_storage(self.storage_path) / self.name


def local_storage(storage_path: str | None = None) -> Path:
    """The resolved storage as a local folder; an error for object storage."""
    storage = resolve_storage(storage_path)
    if is_uri(storage):
        raise LayoutError(f"{storage}: expected local or NFS storage here (sync an s3:// sweep "
                          "down first)")
    return Path(storage)


# ---- driver state --------------------------------------------------------------------------------

def update_state(state_dir: Path, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the sweep's state file (created with its folder if needed)."""
    state_file = state_dir / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    state.update(values)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Written whole then renamed: the app may read it while the driver writes.
    partial = state_file.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, state_file)
    return state


def record_outcomes(state_dir: Path, outcomes: dict[str, str]) -> None:
    """Add trials' final outcomes (trial id -> completed / pruned / failed) to the state."""
    state_file = state_dir / STATE_FILE
    known = json.loads(state_file.read_text()).get("outcomes", {}) if state_file.is_file() else {}
    update_state(state_dir, outcomes={**known, **outcomes})


def load_state(state_dir: Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """The sweep's state; an error naming the file when it or a ``required`` key is missing."""
    state_file = state_dir / STATE_FILE
    if not state_file.is_file():
        raise LayoutError(f"{state_file}: no sweep state here (expected a sweep started with "
                          f"sweep-run, with the same --storage-path / ${STORAGE_ENV} / "
                          f"${STATE_DIR_ENV})")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{state_file}: not valid JSON ({exc})") from exc
    missing = [key for key in required if key not in state]
    if missing:
        raise LayoutError(f"{state_file}: missing key(s) {', '.join(missing)}")
    return state


def objective_mode(state: dict[str, Any], where: Path | str = STATE_FILE) -> str:
    """The objective's mode recorded in the state (``min`` when an old state lacks it)."""
    mode = state.get("mode", "min")
    if mode not in MODES:
        raise LayoutError(f"{where}: key 'mode' is {mode!r}; expected one of {', '.join(MODES)}")
    return mode


# ---- ranking -------------------------------------------------------------------------------------

def ranked(items: Iterable[T], mode: str, objective: Callable[[T], float | None]) -> list[T]:
    """``items`` best first by ``objective(item)`` for ``mode``; missing or non-finite values
    last, ties in their given order. THE ranking rule of report, export, run and the app."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    return sorted(items, key=lambda item: rank_key(objective(item), mode))


def trial_value(result: dict[str, Any] | None) -> float | None:
    """THE value a trial is ranked by, from its last result: the best objective it reported
    (the last objective for a sweep run before trials reported their best)."""
    result = result or {}
    value = result.get(BEST_OBJECTIVE, result.get(OBJECTIVE))
    return float(value) if isinstance(value, (int, float)) else None


def improves(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats the running ``best`` (strictly: a tie keeps the earlier step)."""
    return rank_key(value, mode) < rank_key(best, mode)


def trial_outcome(errored: bool, progress: int, max_t: int) -> str:
    """failed / completed / pruned for a trial that ended: one that stopped before the scheduler's
    horizon without an error was stopped by ASHA. THE outcome rule of MLflow, report and app."""
    if errored:
        return "failed"
    return "completed" if progress >= max_t else "pruned"


# ---- the command line ----------------------------------------------------------------------------

def add_storage_argument(parser: argparse.ArgumentParser, purpose: str = "the sweeps' storage") -> None:
    """The --storage-path flag, the same in every sweeps command (resolve with SweepPaths.resolve)."""
    parser.add_argument("--storage-path", metavar="PATH",
                        help=f"{purpose}: a local dir, NFS or s3:// (default: ${STORAGE_ENV}, "
                        f"else ./{DEFAULT_STORAGE})")
