"""A sweep's trials as their files on disk describe them (read locally: local or NFS storage), for
the report, export and the listening app. File names and the ranking rule are sweeps/layout.py's."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_DIR_GLOB, CHECKPOINT_FILE,
                           ERROR_FILES, OBJECTIVE, OUTCOMES, PARAMS_FILE, RESULT_FILE,
                           RUNNING_BEST_FILE, TRIAL_DIR_PREFIX, SweepPaths, load_state,
                           local_storage, objective_mode, ranked, trial_id_of, trial_value)
from vae.metric_table import VALIDATION_PREFIX

@dataclass
class TrialRecord:
    """A trial as its files on disk describe it."""

    trial_id: str
    status: str  # ERROR (has an error file), TERMINATED (has results) or PENDING (none yet)
    config: dict[str, Any]  # the sampled values (params.json)
    metrics: dict[str, float]  # the best report's validation metrics, objective, step, best_*
    checkpoint: str | None  # the checkpoint folder of the best report (else the last one)
    order: int = 0  # the searcher proposed it as its order-th trial (1-based; 0 unknown)
    outcome: str = "pending"  # completed / pruned / failed; unfinished or pending before the end
    value: float | None = None  # what it is ranked by: trial_value of its last result
    steps_trained: int = 0  # the training step of its last report (its compute)

    @property
    def objective(self) -> float | None:
        """The trial's best objective (see trial_value)."""
        return self.value


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    results_file = trial_dir / RESULT_FILE
    if not results_file.is_file():
        return []
    return [json.loads(line) for line in results_file.read_text().splitlines() if line.strip()]


def best_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The report where the trial reached its best (the one at the last result's best_step); the
    last one for a sweep run before trials reported their best; {} without results."""
    if not results:
        return {}
    best_step = results[-1].get(BEST_STEP)
    at_step = [r for r in results if best_step is not None and r.get("step") == best_step]
    return at_step[-1] if at_step else results[-1]


def read_running_best(checkpoint_dir: Path) -> dict[str, Any]:
    """The running_best.json of a Tune checkpoint folder ({} when absent or unreadable)."""
    try:
        return json.loads((Path(checkpoint_dir) / RUNNING_BEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def best_checkpoint_dir(trial_dir: Path, mode: str, step: int | float | None) -> Path | None:
    """The trial's checkpoint folder saved at ``step`` (its best report), else the best-scored one
    Tune kept, else (older sweeps, no running_best.json) the last one."""
    folders = sorted(p for p in trial_dir.glob(CHECKPOINT_DIR_GLOB) if (p / CHECKPOINT_FILE).is_file())
    saved = {folder: read_running_best(folder) for folder in folders}
    at_step = [f for f, meta in saved.items() if step is not None and meta.get("step") == step]
    if at_step:
        return at_step[-1]
    scored = [f for f, meta in saved.items() if OBJECTIVE in meta]
    if scored:
        return ranked(scored, mode, lambda f: saved[f][OBJECTIVE])[0]
    return folders[-1] if folders else None


def read_trial(trial_dir: Path, mode: str = "min", state: dict[str, Any] | None = None) -> TrialRecord:
    """A trial from its files; ``state`` (the sweep's) gives the horizon and recorded outcomes."""
    state = state or {}
    results = read_results(trial_dir)
    last = results[-1] if results else {}
    best = best_result(results)
    params_file = trial_dir / PARAMS_FILE
    config = json.loads(params_file.read_text()) if params_file.is_file() else {}
    metrics = {k: float(v) for k, v in best.items()
               if (k.startswith(VALIDATION_PREFIX) or k in (OBJECTIVE, BEST_OBJECTIVE, BEST_STEP, "step"))
               and isinstance(v, (int, float))}
    checkpoint = best_checkpoint_dir(trial_dir, mode, best.get("step"))
    # An error file stays after a retried trial recovers: the recorded outcome says which it was.
    failed = any((trial_dir / name).is_file() for name in ERROR_FILES)
    trial_id = last.get("trial_id") or trial_id_of(trial_dir)
    # Wall-clock start: the first result's timestamp less the time it took to get there.
    started = results[0].get("timestamp", 0) - results[0].get("time_total_s", 0) if results else 0
    return TrialRecord(trial_id=trial_id,
                       status="ERROR" if failed else ("TERMINATED" if results else "PENDING"),
                       config=config, metrics=metrics,
                       checkpoint=str(checkpoint) if checkpoint else None, order=int(started),
                       outcome=outcome_from_files(trial_id, last, failed, state),
                       value=trial_value(last), steps_trained=int(last.get("step", 0)))


def outcome_from_files(trial_id: str, last: dict[str, Any], failed: bool,
                       state: dict[str, Any]) -> str:
    """The outcome the driver recorded at the sweep's end; before that, what the files tell:
    failed, completed (reached max_t), else unfinished (running, or stopped by ASHA)."""
    recorded = state.get("outcomes", {}).get(trial_id)
    if recorded in OUTCOMES:
        return recorded
    if failed:
        return "failed"
    if not last:
        return "pending"
    progress = int(last.get(state.get("time_attr", "training_iteration"), 0) or 0)
    return "completed" if progress >= state.get("max_t", math.inf) else "unfinished"


def list_sweeps(storage_path: str | None = None) -> list[str]:
    """Names of the sweeps under the storage that have driver state (sweep.json)."""
    storage = local_storage(storage_path)
    if not storage.is_dir():
        return []
    return sorted(child.name for child in storage.iterdir() if child.is_dir()
                  and SweepPaths(str(storage), child.name).state_file.is_file())


def sweep_trials(paths: SweepPaths) -> tuple[dict[str, Any], list[TrialRecord]]:
    """The sweep's state and its trials read from local files, best first (failed trials last)."""
    state = load_state(paths.state_dir)
    mode = objective_mode(state, paths.state_file)
    experiment = paths.local_experiment_dir()
    trials = [read_trial(d, mode, state) for d in sorted(experiment.glob(TRIAL_DIR_PREFIX + "*"))
              if d.is_dir()]
    # Proposal order: trials start in the order the searcher proposed them.
    for rank, trial in enumerate(sorted((t for t in trials if t.order), key=lambda t: t.order), 1):
        trial.order = rank
    return state, ranked(trials, mode, lambda t: None if t.outcome == "failed" else t.value)


