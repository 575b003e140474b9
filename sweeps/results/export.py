"""Export a sweep's trials as bundles: ``sweep-export SWEEP -o DIR [--at-kbps K | --front]``

``--register NAME`` registers what is exported in MLflow's model registry.

Without --at-kbps or --front: the best trial, the one with the best ``best_objective`` (its best
report, not its last), and its checkpoint is the one saved at that report (Tune keeps it by
score). DIR gets the weights (safetensors, no pickle), the resolved config, that report's metrics
and the provenance (sweep, trial id, MLflow run id, checkpoint step and objective);
``vae.inference.load_bundle(DIR)`` loads it. ``--register NAME`` also registers it in MLflow with
the alias ``champion``.

--at-kbps K: the best trial by the same ranking whose rate (val/kl_kbps) at its best report is at
most K kbit/s and that meets the sweep's constraints; --register sets ``champion-<K>kbps``
(``champion-1p5kbps`` for 1.5: MLflow aliases allow no '.').

--front: every trial on the sweep's Pareto front (its objectives among the trials that meet its
constraints; a single-objective sweep's front is rate vs its objective) into DIR/<trial_id>/,
listed in DIR/front.json with each objective's value. --register registers each as a version;
``champion-<B>kbps`` for each member's rate B rounded up to 0.1 kbit/s points at the best-ranked
member within B (--at-kbps B's rule among the front's trials).

--at-kbps and --front read the sweep's files (local or NFS storage, as the report does); the
default reads them through Ray Tune (s3:// too)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_FILE, OBJECTIVE, LayoutError,
                           SweepPaths, add_storage_argument, load_state, objective_mode, ranked,
                           trial_dirname, trial_value)
from sweeps.objectives import (RATE_METRIC, constraints_from_state, constraints_to_state, feasible,
                               goals_to_state)
from sweeps.results.pareto import sweep_front
from sweeps.results.records import TrialRecord, sweep_trials
from vae.cli import common
from vae.metric_table import VALIDATION_PREFIX

CHAMPION_ALIAS = "champion"
STATE_KEYS = ("tracking_uri", "experiment_id", "parent_run_id")
FRONT_FILE = "front.json"
ALIAS_RATE_STEP = Decimal("0.1")  # a front member's alias names its rate rounded up to this


# ---- choosing trials -----------------------------------------------------------------------------

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
    saved at its best_step (sweeps.results.records.best_result's rule); the latest for older
    sweeps."""
    kept = [(r.checkpoint, r.metrics)
            for r in trial.run_metadata.checkpoint_manager.best_checkpoint_results]
    if not kept:
        raise LookupError(f"trial {trial.trial_id} has no checkpoint")
    best_step = (trial.last_result or {}).get(BEST_STEP)
    at_step = [item for item in kept if best_step is not None and item[1].get("step") == best_step]
    if at_step:
        return at_step[-1]
    return max(kept, key=lambda item: item[1].get("training_iteration", 0))


def rankable_trials(paths: SweepPaths) -> tuple[dict[str, Any], list[TrialRecord]]:
    """The sweep's state and its non-failed trials with a value to rank by, best first (the
    ranking of sweeps.results.records.sweep_trials, read from the sweep's files)."""
    load_state(paths.state_dir, required=STATE_KEYS)  # one clear error before reading trials
    state, trials = sweep_trials(paths)
    return state, [t for t in trials if t.outcome != "failed" and t.value is not None]


def rate_of(trial: TrialRecord) -> float | None:
    """The trial's rate (kbit/s) at its best report; None when it reported none."""
    value = trial.metrics.get(RATE_METRIC)
    return value if value is not None and math.isfinite(value) else None


def trial_within(paths: SweepPaths, kbps: float) -> tuple[dict[str, Any], TrialRecord]:
    """The best-ranked trial whose rate at its best report is <= ``kbps`` and that meets the
    sweep's constraints; a LookupError saying the lowest rate there is when none does."""
    state, trials = rankable_trials(paths)
    constraints = constraints_from_state(state)
    eligible = [t for t in trials if feasible(constraints, t.metrics) and rate_of(t) is not None]
    within = [t for t in eligible if rate_of(t) <= kbps]
    if within:
        return state, within[0]
    meeting = f" meeting {' and '.join(c.words() for c in constraints)}" if constraints else ""
    if eligible:
        lowest = min(eligible, key=rate_of)
        why = f"lowest: {rate_of(lowest):g} kbit/s, {trial_dirname(lowest.trial_id)}"
    else:
        why = f"no non-failed trial{meeting} reported {RATE_METRIC}"
    raise LookupError(f"{paths.name}: no trial{meeting} has {RATE_METRIC} <= {kbps:g} kbit/s at "
                      f"its best report ({why})")


# ---- aliases -------------------------------------------------------------------------------------

def _decimal(value: float | Decimal) -> Decimal:
    """The shortest decimal that reads back as ``value`` (4.2, not 4.2000000000000002)."""
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def champion_alias(kbps: float | Decimal | None = None) -> str:
    """``champion``, or ``champion-<kbps>kbps`` with '.' written 'p' (an MLflow alias allows only
    letters, digits, '_' and '-'): 3 -> champion-3kbps, 1.5 -> champion-1p5kbps."""
    if kbps is None:
        return CHAMPION_ALIAS
    digits = format(_decimal(kbps).normalize(), "f")
    return f"{CHAMPION_ALIAS}-{digits.replace('.', 'p')}kbps"


def rate_budget(kbps: float) -> Decimal:
    """``kbps`` rounded up to ALIAS_RATE_STEP: the budget a front member's alias names."""
    return _decimal(kbps).quantize(ALIAS_RATE_STEP, rounding=ROUND_CEILING)


def front_aliases(members: Sequence[TrialRecord], ranking: Sequence[TrialRecord]) -> dict[str, str]:
    """alias -> trial id: for each member's rate budget B, ``champion-<B>kbps`` names the member
    ranked best (``ranking``'s order) among those within B, so a member may hold none or several."""
    order = {t.trial_id: i for i, t in enumerate(ranking)}
    rated = [(t, _decimal(rate)) for t in members if (rate := rate_of(t)) is not None]
    aliases = {}
    for budget in sorted({rate_budget(rate) for _, rate in rated}):
        best = min((t for t, rate in rated if rate <= budget), key=lambda t: order[t.trial_id])
        aliases[champion_alias(budget)] = best.trial_id
    return aliases


# ---- writing bundles -----------------------------------------------------------------------------

def exported_metrics(reported: dict[str, Any]) -> dict[str, float]:
    """What a bundle's metrics.json keeps of a report: validation metrics and the objective."""
    return {k: float(v) for k, v in reported.items()
            if (k.startswith(VALIDATION_PREFIX) or k in (OBJECTIVE, BEST_OBJECTIVE, BEST_STEP))
            and isinstance(v, (int, float))}


def export_trial(paths: SweepPaths, state: dict[str, Any], trial_id: str, searched: dict[str, Any],
                 reported: dict[str, Any], checkpoint_dir: str | Path,
                 out_dir: str | Path) -> dict[str, Any]:
    """Write the bundle of one trial's checkpoint (saved at the report ``reported``) to
    ``out_dir``, with its provenance and the trial's MLflow run."""
    from sweeps.execution.tracking import client_for, find_child_run
    from vae.inference.bundle import bundle_from_checkpoint

    client = client_for(state["tracking_uri"])
    run_id = find_child_run(client, state["experiment_id"], state["parent_run_id"], trial_id)
    metrics = exported_metrics(reported)
    provenance = {"sweep": paths.name, "experiment_dir": paths.experiment_dir,
                  "trial_id": trial_id, "mlflow_run_id": run_id,
                  "mlflow_tracking_uri": state["tracking_uri"], "searched": dict(searched),
                  "checkpoint_objective": reported.get(OBJECTIVE),
                  "checkpoint_reported_step": reported.get("step")}
    out = bundle_from_checkpoint(Path(checkpoint_dir) / CHECKPOINT_FILE, out_dir, metrics, provenance)
    return {"bundle": str(Path(out).resolve()), "trial_id": trial_id,
            "objective": metrics.get(OBJECTIVE), "step": reported.get("step"),
            "mlflow_run_id": run_id}


def export_record(paths: SweepPaths, state: dict[str, Any], trial: TrialRecord,
                  out_dir: str | Path) -> dict[str, Any]:
    """:func:`export_trial` of a trial read from the sweep's files."""
    return export_trial(paths, state, trial.trial_id, trial.config, trial.metrics,
                        _checkpoint_of(trial), out_dir)


def _checkpoint_of(trial: TrialRecord) -> str:
    if trial.checkpoint is None:
        raise LookupError(f"{trial_dirname(trial.trial_id)}: no checkpoint with a {CHECKPOINT_FILE}")
    return trial.checkpoint


def export_best(paths: SweepPaths, out_dir: str | Path, register: str | None = None) -> dict[str, Any]:
    _, trial, state = best_trial(paths)
    checkpoint, reported = best_checkpoint(trial)
    with checkpoint.as_directory() as folder:
        result = export_trial(paths, state, trial.trial_id, trial.config, reported, folder, out_dir)
    if register:
        result["registered"] = register_bundle(result["bundle"], register, state["tracking_uri"],
                                               result["mlflow_run_id"])
    return result


def export_within(paths: SweepPaths, kbps: float, out_dir: str | Path,
                  register: str | None = None) -> dict[str, Any]:
    """Export the best trial within ``kbps`` (:func:`trial_within`); nothing is written when none is."""
    state, trial = trial_within(paths, kbps)
    result = {**export_record(paths, state, trial, out_dir), "kbps": rate_of(trial)}
    if register:
        result["registered"] = register_bundle(result["bundle"], register, state["tracking_uri"],
                                               result["mlflow_run_id"], champion_alias(kbps))
    return result


def export_front(paths: SweepPaths, out_dir: str | Path, register: str | None = None) -> dict[str, Any]:
    """Export every trial on the sweep's front into ``out_dir``/<trial id>/ and list them in
    ``out_dir``/front.json; nothing is written when the front is empty."""
    state, trials = rankable_trials(paths)
    front = sweep_front(state, trials)
    if not front.members:
        raise LookupError(f"{paths.name}: no trial on the front (no non-failed trial meets the "
                          "constraints with every objective reported)")
    for trial in front.members:
        _checkpoint_of(trial)  # every member exportable before the first bundle is written
    out = Path(out_dir)
    members = [{**export_record(paths, state, trial, out / trial.trial_id),
                "goals": {goal.metric: trial.metrics[goal.metric] for goal in front.goals}}
               for trial in front.members]
    listing = {"sweep": paths.name, "goals": goals_to_state(front.goals),
               "constraints": constraints_to_state(constraints_from_state(state)),
               "hypervolume": front.hypervolume, "reference": list(front.reference),
               "reference_declared": front.reference_declared, "members": members}
    if register:
        listing["aliases"] = register_front(members, front_aliases(front.members, trials),
                                            register, state["tracking_uri"])
    (out / FRONT_FILE).write_text(json.dumps(listing, indent=2))
    return listing


# ---- MLflow's model registry ---------------------------------------------------------------------

def register_bundle(bundle_dir: str | Path, name: str, tracking_uri: str, run_id: str | None,
                    alias: str | None = CHAMPION_ALIAS) -> dict[str, Any]:
    """Log the bundle as an MLflow pyfunc model in the trial's run, registered as a version of
    ``name``, and point ``alias`` (if any) at it."""
    import mlflow

    from vae.inference.mlflow_model import log_bundle_model

    version = log_bundle_model(bundle_dir, registered_name=name, run_id=run_id, tracking_uri=tracking_uri)
    if alias:
        mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)
    return {"name": name, "version": version, "alias": alias,
            "uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"}


def register_front(members: list[dict[str, Any]], aliases: dict[str, str], name: str,
                   tracking_uri: str) -> dict[str, str]:
    """Register each exported member (its entry gains ``registered``) and set ``aliases``
    (alias -> trial id); alias -> model URI of the version it names."""
    import mlflow

    versions = {}
    for member in members:
        member["registered"] = register_bundle(member["bundle"], name, tracking_uri,
                                               member["mlflow_run_id"], alias=None)
        versions[member["trial_id"]] = member["registered"]["version"]
    client = mlflow.MlflowClient(tracking_uri)
    for alias, trial_id in aliases.items():
        client.set_registered_model_alias(name, alias, versions[trial_id])
    return {alias: f"models:/{name}@{alias}" for alias in aliases}


# ---- the command line ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-export", __doc__)
    parser.add_argument("sweep", help="sweep name (as given to sweep-run)")
    common.add_out(parser, "bundle folder to write (--front: a folder of bundles)")
    add_storage_argument(parser, "where the sweep's results are")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--at-kbps", type=float, metavar="KBPS",
                       help=f"the best trial whose {RATE_METRIC} at its best report is <= KBPS")
    which.add_argument("--front", action="store_true",
                       help="every trial on the sweep's Pareto front, with DIR/front.json")
    parser.add_argument("--register", metavar="NAME",
                        help="register in MLflow as NAME@champion (--at-kbps K: "
                        "NAME@champion-<K>kbps; --front: each member, aliased per rate)")
    return parser


@common.exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = common.positive_problem("--at-kbps", args.at_kbps, "kbit/s")
    if problem:
        return common.fail(problem)
    try:
        paths = SweepPaths.resolve(args.storage_path, args.sweep)
        problem = common.writable_problem("-o", args.out)
        if problem:
            return common.fail(problem)
        if args.at_kbps is not None:
            result = export_within(paths, args.at_kbps, args.out, args.register)
        elif args.front:
            result = export_front(paths, args.out, args.register)
        else:
            result = export_best(paths, args.out, args.register)
    except (LayoutError, LookupError) as exc:
        return common.fail(str(exc))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    common.run(main)
