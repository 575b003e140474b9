"""The driver side of a sweep: opens the MLflow parent run and the Optuna study, builds the Ray
Tune ``Tuner`` (Optuna proposes, ASHA stops, sweeps/execution/trial.py trains), runs it to the end,
reconciles every trial's final status and writes the report. ``sweeps/run.py`` is its CLI."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sweeps.objectives import at_best_report, constraints_to_state, goals_to_state
from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, OBJECTIVE, SweepPaths, ranked, trial_dirname,
                           record_outcomes, trial_id_of, trial_outcome, trial_value,
                           update_state)

# Checkpoints a trial keeps by score (Ray also keeps the latest, so a trial can always resume).
CHECKPOINTS_TO_KEEP = 1
# bytes: what a multi-worker trial's own actor asks (sweeps/execution/trial_workers.py)
RELAY_MEMORY = 2**20
INTERRUPTED_STATUS = "KILLED"  # the parent run of an interrupted (resumable) sweep
logger = logging.getLogger(__name__)


def tracking_step(what: str, call: Any, *args: Any) -> Any:
    """``call(*args)``, or None with one warning line when the MLflow store fails (it may have
    gone away or turned read-only): the sweep's results stay on disk and in Optuna."""
    from vae.training.mlflow import store_error_line

    try:
        return call(*args)
    except Exception as exc:
        logger.warning("MLflow: %s not recorded (%s)", what, store_error_line(exc))
        return None


@dataclass(frozen=True)
class SweepTracking:
    """The sweep's MLflow side, opened before Ray starts."""

    client: Any  # MlflowClient
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def trial_name(trial: Any) -> str:
    """Tune's trial_name_creator and trial_dirname_creator (see sweeps.layout.trial_dirname)."""
    return trial_dirname(trial.trial_id)


def open_tracking(space: Any, paths: SweepPaths, tracking_uri: str | None,
                  resume: bool) -> SweepTracking:
    """Open (or reattach to) the parent run, record the sweep's state, and on a fresh sweep log
    the space, the base config and the sweep's settings to the parent run."""
    from sweeps.execution import tracking
    from vae.training.mlflow import resolve_tracking_uri

    spec = space.spec
    tracking_uri = resolve_tracking_uri(tracking_uri or space.base_config.tracking.tracking_uri)
    state_dir = paths.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    client = tracking.client_for(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, space.base_config.tracking.experiment,
                                               tracking.default_artifact_location(tracking_uri))
    parent_run_id = tracking.open_parent_run(client, experiment_id, paths.name, state_dir)
    update_state(state_dir, interrupted=False, tracking_uri=tracking_uri, study_name=paths.name, max_t=space.max_t,
                 time_attr=spec.scheduler.time_attr, mode=spec.objective.mode,
                 objective=spec.objective.metric, experiment_dir=paths.experiment_dir,
                 objectives=goals_to_state(space.goals) if space.multi_objective else None,
                 constraints=constraints_to_state(space.constraints), base_config=space.base_config.to_dict())
    if not resume:
        client.log_text(parent_run_id, space.raw_text, f"search_space/{space.path.name}")
        client.log_text(parent_run_id, space.base_config.to_yaml(), "base_config.yaml")
        for key, value in {"space": str(space.path), "num_samples": spec.num_samples,
                           "objective": spec.objective.metric, "sampler": spec.searcher.sampler,
                           "scheduler": spec.scheduler.type,
                           "objectives": ", ".join(f"{g.metric} ({g.mode})" for g in space.goals),
                           "constraints": "; ".join(c.words() for c in space.constraints) or "none"
                           }.items():
            client.log_param(parent_run_id, key, value)
    return SweepTracking(client, tracking_uri, experiment_id, parent_run_id)


def start_ray(address: str | None, num_cpus: int | None, state_api: bool = False) -> None:
    """A local Ray unless ``address``. ``state_api``: with the dashboard (on 127.0.0.1), whose
    state API Ray Train's cleaner needs to free a stopped multi-worker trial's cores."""
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=state_api, dashboard_host="127.0.0.1",
                 log_to_driver=True)


def check_placement(space: Any) -> None:
    """UnplaceableTrial (exit 2) when the cluster can never hold one trial's workers."""
    import ray

    from sweeps.execution.guard import UnplaceableTrial, placement_problem

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    res = space.spec.resources
    problem = placement_problem(str(space.path), res.cpu, res.gpu, res.workers, nodes)
    if problem:
        raise UnplaceableTrial(problem)


def make_trainable(space: Any, paths: SweepPaths, track: SweepTracking) -> Any:
    """``run_trial`` with its context and resources, as Tune runs it."""
    import ray
    from ray import tune

    from sweeps.execution.tracking import reachable_tracking_uri
    from sweeps.execution.trial import TrialContext, run_trial

    spec = space.spec
    trial_tracking_uri = track.tracking_uri
    if sum(node["Alive"] for node in ray.nodes()) > 1:  # trials may run on other machines
        trial_tracking_uri = reachable_tracking_uri(track.tracking_uri,
                                                    ray.util.get_node_ip_address())
    budget = spec.rate_budget
    context = TrialContext(
        sweep_name=paths.name, base_config=space.base_config.to_dict(),
        tracking_uri=trial_tracking_uri,
        experiment_id=track.experiment_id, parent_run_id=track.parent_run_id,
        objective_metric=spec.objective.metric, mode=spec.objective.mode,
        max_kbps=budget.max_kbps if budget else None,
        penalty_per_kbps=budget.penalty_per_kbps if budget else 1.0,
        cpus_per_trial=spec.resources.cpu, json_params=space.json_params,
        constraints=tuple(space.constraints), workers=spec.resources.workers,
        gpus_per_worker=spec.resources.gpu, experiment_dir=paths.experiment_dir)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    if spec.resources.workers > 1:  # the trial relays; its workers hold the cores (Ray Train),
        resources = {"cpu": 0, "gpu": 0, "memory": RELAY_MEMORY}  # and Ray places no empty one
    trainable = run_trial
    if spec.resources.workers > 1:
        from sweeps.execution.trial_workers import run_workers_trial as trainable
    return tune.with_resources(tune.with_parameters(trainable, context=context), resources)


def make_tuner(space: Any, paths: SweepPaths, trainable: Any, callbacks: list[Any], *,
               resume: bool, reuse_actors: bool) -> Any:
    """A restored Tuner, or a new one with the Optuna searcher and the space's scheduler."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # issue 12 hook (see progress_reporter below)
    from sweeps.execution.progress import sweep_reporter
    from sweeps.execution.search import make_searcher

    if resume:
        return tune.Tuner.restore(paths.experiment_dir, trainable=trainable,
                                  resume_unfinished=True, resume_errored=False)
    spec = space.spec
    searcher = make_searcher(space, paths.optuna_url, paths.name)
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr=spec.scheduler.time_attr, max_t=space.max_t,
                                  grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # ASHA and Optuna rank a trial by its best report so far, not its last.
            metric=BEST_OBJECTIVE, mode=spec.objective.mode, search_alg=searcher,
            scheduler=scheduler, num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,  # (a reused actor would outlive
            reuse_actors=reuse_actors and spec.resources.workers == 1,  # a trial's TorchTrainer)
            trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=paths.name, storage_path=paths.storage_path, callbacks=callbacks,
            # Keep the best-scored checkpoint: the one export and the app load.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_TO_KEEP, checkpoint_score_attribute=OBJECTIVE,
                checkpoint_score_order=spec.objective.mode),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # issue 12 hook: the live view in the sweep's own terms (sweeps/execution/progress.py)
            progress_reporter=sweep_reporter(space, paths),
            verbose=1),
    )


def final_outcomes(results: Any, space: Any,
                   paths: SweepPaths) -> dict[str, tuple[str, str | None]]:
    """Every trial's final outcome and failure reason ({trial_id: (outcome, reason)}), recorded
    in the sweep's state for the readers of its files (the app): a retried trial that finished
    is completed although its error file stays."""
    time_attr = space.spec.scheduler.time_attr
    outcomes = {}
    for result in results:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or trial_id_of(result.path)
        progress = int((result.metrics or {}).get(time_attr, 0))
        outcome = trial_outcome(bool(result.error), progress, space.max_t)
        outcomes[trial_id] = (outcome, repr(result.error)[-4900:] if result.error else None)
    record_outcomes(paths.state_dir, {k: outcome for k, (outcome, _) in outcomes.items()})
    return outcomes


def run_sweep(space: Any, paths: SweepPaths, *, tracking_uri: str | None = None,
              address: str | None = None, resume: bool = False, num_cpus: int | None = None,
              reuse_actors: bool = True, report: bool = True,
              extra_callbacks: list[Any] = ()) -> dict[str, Any]:
    """Run (or resume) the sweep to the end; returns a summary."""
    from sweeps.execution.tracking import TrialRunStatusCallback
    from vae.training.mlflow import quiet_store_errors, store_error_line

    quiet_store_errors()  # a failing store is one warning line here, not a traceback per call
    start_ray(address, num_cpus, state_api=space.spec.resources.workers > 1)
    check_placement(space)
    track = open_tracking(space, paths, tracking_uri, resume)
    status_callback = TrialRunStatusCallback(track.tracking_uri, track.experiment_id,
                                             track.parent_run_id, space.max_t,
                                             space.spec.scheduler.time_attr, paths.state_dir)
    tuner = make_tuner(space, paths, make_trainable(space, paths, track),
                       [status_callback, *extra_callbacks], resume=resume,
                       reuse_actors=reuse_actors)
    from sweeps.execution.guard import interruption_watch

    with interruption_watch() as interrupted:
        results = tuner.fit()
    if interrupted.is_set():
        return interrupted_summary(paths, track)
    outcomes = final_outcomes(results, space, paths)
    summary = sweep_summary(results, outcomes, space, paths, track)
    if report and "best" in summary:
        from sweeps.results.report import build_report

        build_report(paths, paths.report_dir)
        summary["report"] = str(paths.report_dir)
    try:
        record_sweep_end(track, outcomes, summary.get("best"), summary.get("report"),
                         summary.get("front"))
    except Exception as exc:
        unrecorded = [r.metrics.get("mlflow_run_id") for r in results if r.metrics
                      and r.metrics.get("trial_id") not in status_callback.recorded]
        left = [f"{track.parent_run_id} (parent)", *filter(None, unrecorded)]
        logger.warning("MLflow: the sweep's end not recorded (%s); runs left RUNNING: %s. Once "
                       "the store works again, the same command with --resume records them",
                       store_error_line(exc), ", ".join(left))
    return summary


def sweep_summary(results: Any, outcomes: dict[str, tuple[str, str | None]], space: Any,
                  paths: SweepPaths, track: SweepTracking) -> dict[str, Any]:
    """What the sweep did (counts per outcome, the best trial), with Optuna's orphans failed."""
    from sweeps.results.pareto import front_summary, pareto_front
    from sweeps.execution.progress import SweepView
    from sweeps.execution.search import fail_orphaned_trials

    summary: dict[str, Any] = {
        "sweep": paths.name, "experiment_dir": paths.experiment_dir,
        "mlflow": {"tracking_uri": track.tracking_uri, "parent_run_id": track.parent_run_id},
        "optuna_storage": paths.optuna_url,
        "trials": dict(Counter(outcome for outcome, _ in outcomes.values())),
        "optuna_orphans_failed": fail_orphaned_trials(paths.optuna_url, paths.name)}
    ok = [r for r in results if not r.error and trial_value(r.metrics) is not None]
    if ok:
        best = ranked(ok, space.spec.objective.mode, lambda r: trial_value(r.metrics))[0]
        step = best.metrics.get(BEST_STEP, best.metrics.get("step"))
        summary["best"] = {"trial_id": best.metrics.get("trial_id"),
                           BEST_OBJECTIVE: trial_value(best.metrics), BEST_STEP: step,
                           "config": dict(best.config),
                           "beside": report_at(best, step, SweepView.of(space).beside_objective())}
    if space.multi_objective:
        summary["front"] = front_summary(pareto_front(
            ok, lambda r: at_best_report(r.metrics), space.goals, space.constraints),
            lambda r: r.metrics.get("trial_id"), space.constraints)
    return summary


def report_at(result: Any, step: int | None, keys: tuple[str, ...]) -> dict[str, float]:
    """``keys`` of the trial's report at ``step`` (its best), where it reported them."""
    frame = result.metrics_dataframe
    if frame is None or step is None or "step" not in frame:
        return {}
    rows = frame[frame["step"] == step]
    if not len(rows):
        return {}
    row = rows.iloc[-1]
    return {key: float(row[key]) for key in keys if key in row and row[key] == row[key]}


def record_sweep_end(track: SweepTracking, outcomes: dict[str, tuple[str, str | None]],
                     best: dict[str, Any] | None, report_dir: str | None,
                     front: dict[str, Any] | None = None) -> None:
    """The sweep's end in MLflow: every trial's run with its final status, the sweep's best, the
    report, and the parent run FINISHED last (so a parent still RUNNING says something is
    missing)."""
    from sweeps.execution import tracking

    tracking.reconcile(track.client, track.experiment_id, track.parent_run_id, outcomes)
    if best:
        tracking.log_sweep_best(track.client, track.experiment_id, track.parent_run_id,
                                best["trial_id"], best[BEST_OBJECTIVE])
    if front:
        from sweeps.results.pareto import log_front
        log_front(track.client, track.parent_run_id, front)
    if report_dir:
        track.client.log_artifacts(track.parent_run_id, report_dir, "report")
    track.client.set_terminated(track.parent_run_id, "FINISHED")


def interrupted_summary(paths: SweepPaths, track: SweepTracking) -> dict[str, Any]:
    """After Ctrl-C: nothing is reconciled or failed (the in-flight trials resume with --resume
    and tell Optuna their real results then); the parent run is KILLED, not FINISHED."""
    update_state(paths.state_dir, interrupted=True)
    tracking_step("the parent run's interruption", track.client.set_terminated,
                  track.parent_run_id, INTERRUPTED_STATUS)
    return {"sweep": paths.name, "experiment_dir": paths.experiment_dir, "interrupted": True,
            "mlflow": {"tracking_uri": track.tracking_uri, "parent_run_id": track.parent_run_id},
            "optuna_storage": paths.optuna_url}
