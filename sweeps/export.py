"""Export the best trial of a sweep: ``sweep-export SWEEP -o DIR [--register NAME]``

The best trial is the one with the best ``best_objective`` (its best report, not its last), and
its checkpoint is the one saved at that report (Tune keeps it by score). DIR gets the weights
(safetensors, no pickle), the resolved config, that report's metrics and the provenance (sweep,
trial id, MLflow run id, checkpoint step and objective); ``vae.inference.load_bundle(DIR)``
loads it. ``--register NAME`` also registers it in MLflow with the alias ``champion``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_FILE, OBJECTIVE, LayoutError,
                           SweepPaths, add_storage_argument, load_state, objective_mode, ranked,
                           trial_value)
from vae.cli import common
from vae.metric_table import VALIDATION_PREFIX

CHAMPION_ALIAS = "champion"
STATE_KEYS = ("tracking_uri", "experiment_id", "parent_run_id")


def best_trial(paths: SweepPaths) -> tuple[Any, Any, dict[str, Any]]:
    """(analysis, trial, state) of the best non-failed trial by its best reported objective."""
    from ray.tune import ExperimentAnalysis

    state = load_state(paths.state_dir, required=STATE_KEYS)
    analysis = ExperimentAnalysis(paths.experiment_dir)
    candidates = [t for t in analysis.trials
                  if t.status != "ERROR" and trial_value(t.last_result) is not None]
    if not candidates:
        raise LookupError(f"{paths.experiment_dir}: no trial finished with an objective to rank by")
    best = ranked(candidates, objective_mode(state), lambda t: trial_value(t.last_result))[0]
    return analysis, best, state


def best_checkpoint(trial: Any) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, the metrics reported with it) of the trial's best report: the kept checkpoint
    saved at its best_step (sweeps.records.best_result's rule); the latest for older sweeps."""
    kept = [(r.checkpoint, r.metrics)
            for r in trial.run_metadata.checkpoint_manager.best_checkpoint_results]
    if not kept:
        raise LookupError(f"trial {trial.trial_id} has no checkpoint")
    best_step = (trial.last_result or {}).get(BEST_STEP)
    at_step = [item for item in kept if best_step is not None and item[1].get("step") == best_step]
    if at_step:
        return at_step[-1]
    return max(kept, key=lambda item: item[1].get("training_iteration", 0))


def export_best(paths: SweepPaths, out_dir: str | Path, register: str | None = None) -> dict[str, Any]:
    from sweeps.tracking import client_for, find_child_run
    from vae.inference.bundle import bundle_from_checkpoint

    _, trial, state = best_trial(paths)
    checkpoint, reported = best_checkpoint(trial)
    client = client_for(state["tracking_uri"])
    run_id = find_child_run(client, state["experiment_id"], state["parent_run_id"], trial.trial_id)
    metrics = {k: float(v) for k, v in reported.items()
               if (k.startswith(VALIDATION_PREFIX) or k in (OBJECTIVE, BEST_OBJECTIVE, BEST_STEP))
               and isinstance(v, (int, float))}
    provenance = {"sweep": paths.name, "experiment_dir": paths.experiment_dir,
                  "trial_id": trial.trial_id, "mlflow_run_id": run_id,
                  "mlflow_tracking_uri": state["tracking_uri"], "searched": dict(trial.config),
                  "checkpoint_objective": reported.get(OBJECTIVE),
                  "checkpoint_reported_step": reported.get("step")}
    with checkpoint.as_directory() as folder:
        out = bundle_from_checkpoint(Path(folder) / CHECKPOINT_FILE, out_dir, metrics, provenance)
    result: dict[str, Any] = {"bundle": str(Path(out).resolve()), "trial_id": trial.trial_id,
                              "objective": metrics.get(OBJECTIVE), "step": reported.get("step"),
                              "mlflow_run_id": run_id}
    if register:
        result["registered"] = register_bundle(out, register, state["tracking_uri"], run_id)
    return result


def register_bundle(bundle_dir: Path, name: str, tracking_uri: str, run_id: str | None) -> dict[str, Any]:
    """Log the bundle as an MLflow pyfunc model in the trial's run and point ``champion`` at it."""
    import mlflow

    from vae.inference.mlflow_model import log_bundle_model

    version = log_bundle_model(bundle_dir, registered_name=name, run_id=run_id, tracking_uri=tracking_uri)
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return {"name": name, "version": version, "alias": CHAMPION_ALIAS,
            "uri": f"models:/{name}@{CHAMPION_ALIAS}"}


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-export", __doc__)
    parser.add_argument("sweep", help="sweep name (as given to sweep-run)")
    common.add_out(parser, "bundle folder to write")
    add_storage_argument(parser, "where the sweep's results are")
    parser.add_argument("--register", metavar="NAME", help="register in MLflow as NAME@champion")
    return parser


@common.exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = SweepPaths.resolve(args.storage_path, args.sweep)
        problem = common.writable_problem("-o", args.out)
        if problem:
            return common.fail(problem)
        result = export_best(paths, args.out, args.register)
    except (LayoutError, LookupError) as exc:
        return common.fail(str(exc))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    common.run(main)
