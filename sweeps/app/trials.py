"""A/B across sweep trials, without Streamlit: which trial is the seed default, a bundle of a
trial's checkpoint (built once, cached) and the side-by-side table. The sweep's files are read
by sweeps/layout.py."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sweeps.app.models import is_bundle
from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_FILE
from sweeps.results.records import TrialRecord
from vae.inference import BundleError

CACHE_ENV = "VAE_APP_CACHE"
DEFAULT_CACHE = "~/.cache/audio-vae/trial_bundles"
UNKNOWN_ORDER = 1 << 30
FRONT_COLUMN = "front"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)).expanduser()


def trial_label(trial: TrialRecord) -> str:
    value, step = trial.value, trial.metrics.get(BEST_STEP)
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "–"
    at = f" at step {int(step)}" if isinstance(step, (int, float)) else ""
    return f"{trial.trial_id} (best {shown}{at}, {trial.outcome})"


def trial_rows(trials: list[TrialRecord], front: Collection[str] = ()) -> list[dict[str, Any]]:
    """The tab's trial table, in the given (ranked) order: outcome, whether the trial is on the
    sweep's Pareto front (``front``: their ids), best objective and the step it was reached at,
    that report's metrics (its checkpoint is the one compared) and the params."""
    return [{"trial": t.trial_id, "outcome": t.outcome, FRONT_COLUMN: t.trial_id in front,
             BEST_OBJECTIVE: t.value,
             **{k: v for k, v in t.metrics.items() if k != BEST_OBJECTIVE}, **t.config}
            for t in trials]


def _trial_order(trial: TrialRecord) -> tuple[int, str]:
    """Proposal order, unknown last."""
    return (trial.order if trial.order > 0 else UNKNOWN_ORDER, trial.trial_id)


def _same_point(config: dict[str, Any], point: dict[str, Any]) -> bool:
    for key, value in point.items():
        have = config.get(key)
        if isinstance(value, float) or isinstance(have, float):
            if have is None or not math.isclose(float(have), float(value), rel_tol=1e-9):
                return False
        elif have != value:
            return False
    return True


def seeded_points(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The search space's ``points_to_evaluate``, from the space file logged to the sweep's parent
    MLflow run (empty when that cannot be read)."""
    try:
        import yaml
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=state["tracking_uri"])
        for item in client.list_artifacts(state["parent_run_id"], "search_space"):
            with tempfile.TemporaryDirectory() as folder:
                local = client.download_artifacts(state["parent_run_id"], item.path, folder)
                return list(yaml.safe_load(Path(local).read_text()).get("points_to_evaluate") or [])
    except Exception:  # no MLflow, no artifact: fall back to the trial order
        return []
    return []


def seed_default_trial(trials: list[TrialRecord], state: dict[str, Any]
                       ) -> tuple[TrialRecord | None, str]:
    """The trial of the space's first seeded point (the default config the searcher starts from),
    else the first trial the searcher proposed; with a sentence saying which."""
    if not trials:
        return None, "the sweep has no trials"
    points = seeded_points(state)
    if points:
        for trial in sorted(trials, key=_trial_order):
            if _same_point(trial.config, points[0]):
                return trial, f"seeded point {points[0]}"
    first = min(trials, key=_trial_order)
    return first, "the first trial proposed (no seeded point found)"


def trial_bundle(storage_path: str, name: str, trial: TrialRecord, cache: str | Path) -> Path:
    """A bundle of ``trial``'s best checkpoint, built once into ``cache`` (keyed by the
    checkpoint, so a better checkpoint builds a new bundle)."""
    from vae.inference import bundle_from_checkpoint

    if trial.checkpoint is None:
        raise BundleError(f"trial {trial.trial_id} of sweep {name} has no checkpoint")
    key = hashlib.sha1(trial.checkpoint.encode()).hexdigest()[:12]
    target = Path(cache) / name / trial.trial_id / key
    if is_bundle(target):
        return target
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent.parent
                                    if target.parent.parent.exists() else None))
    try:
        provenance = {"sweep": name, "storage_path": storage_path, "trial_id": trial.trial_id,
                      "searched": trial.config}
        ckpt = Path(trial.checkpoint) / CHECKPOINT_FILE
        if not ckpt.is_file():
            raise BundleError(f"{trial.checkpoint}: checkpoint has no {CHECKPOINT_FILE}")
        bundle_from_checkpoint(ckpt, staging / "bundle", dict(trial.metrics), provenance)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not is_bundle(target):
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging / "bundle", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ab_table(a: tuple[str, TrialRecord, dict[str, float]],
             b: tuple[str, TrialRecord, dict[str, float]]) -> Any:
    """Rows: searched values, the sweep's metrics at each trial's best report (the checkpoint
    played), the clip's metrics; columns A, B."""
    import pandas as pd

    def shown(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows: dict[str, dict[str, Any]] = {}
    for column, trial, clip in (a, b):
        for key, value in trial.config.items():
            rows.setdefault(f"searched: {key}", {})[column] = shown(value)
        for key, value in trial.metrics.items():
            rows.setdefault(f"sweep: {key}", {})[column] = shown(value)
        for key, value in clip.items():
            rows.setdefault(f"clip: {key}", {})[column] = shown(value)
    return pd.DataFrame.from_dict(rows, orient="index", columns=[a[0], b[0]]).fillna("–")
