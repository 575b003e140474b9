"""Run a sweep: ``python sweeps/run.py search_spaces/kl.yaml [--resume] [--address auto] ...``

Validates the search space before anything starts (exit 2 on any problem), then runs Ray Tune
with Optuna proposing configs, ASHA stopping poor trials and MLflow recording every trial."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STORAGE = "sweep_results"
STATE_FILE = "sweep.json"
OPTUNA_DB = "optuna.db"


@dataclass
class SweepPaths:
    storage_path: str  # absolute local path or a URI (s3://, gs://) Ray can write to
    name: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.storage_path

    @property
    def experiment_dir(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def local_state_dir(self) -> Path:
        """Driver-side state (parent run id, Optuna sqlite study): $SWEEP_STATE_DIR/NAME when set,
        else beside the results when they are local, else ~/sweep_state/NAME (object storage
        cannot hold a sqlite file; on a cluster the driver runs on the head node)."""
        if os.environ.get("SWEEP_STATE_DIR"):
            return Path(os.environ["SWEEP_STATE_DIR"]).expanduser().resolve() / self.name
        if self.is_local:
            return Path(self.experiment_dir)
        return Path("~/sweep_state").expanduser() / self.name


def resolve_storage(storage_path: str) -> str:
    """Absolute local path (Ray runs trials in other directories), or a URI left as it is."""
    return storage_path if "://" in storage_path else str(Path(storage_path).resolve())


def reachable_tracking_uri(tracking_uri: str, driver_ip: str) -> str:
    """A loopback MLflow server address as the trials on other nodes can reach it: the driver's
    node IP in place of 127.0.0.1/localhost (the server must listen on that interface)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return tracking_uri
    netloc = driver_ip + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def update_state(state_dir: Path, **values: Any) -> dict[str, Any]:
    """The sweep's driver-side state file (parent run, study, scheduler horizon), merged."""
    state_file = state_dir / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    state.update(values)
    state_file.write_text(json.dumps(state, indent=2))
    return state


def trial_name(trial: Any) -> str:
    """Short, stable names (Ray's default dir names embed every searched value)."""
    return f"trial_{trial.trial_id}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python sweeps/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("space", help="search-space YAML (see search_spaces/)")
    parser.add_argument("--name", help="sweep name (default: the space's name)")
    parser.add_argument("--num-samples", type=int, help="trials to run (default: the space's)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: the space's)")
    parser.add_argument("--address", help="Ray address; 'auto' joins a running cluster "
                        "(default: start a local Ray)")
    parser.add_argument("--storage-path", default=os.environ.get("SWEEP_STORAGE", DEFAULT_STORAGE),
                        help="where results and checkpoints go: a local dir, NFS or s3:// "
                        "(shared by every node on a cluster; default ./sweep_results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                        "then the base config's, then ./mlflow.db)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--no-reuse-actors", action="store_true",
                        help="start a fresh worker per trial (slower start; for benchmarks)")
    parser.add_argument("--no-report", action="store_true", help="skip the end-of-sweep report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Validate everything before Ray or MLflow is touched.
    from sweeps.space import SpaceError, load_space

    overrides: dict[str, Any] = {}
    if args.num_samples is not None:
        overrides["num_samples"] = args.num_samples
    if args.max_concurrent is not None:
        overrides["max_concurrent_trials"] = args.max_concurrent
    try:
        space = load_space(args.space, overrides)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = SweepPaths(resolve_storage(args.storage_path), args.name or space.name)
    from ray import tune

    restorable = tune.Tuner.can_restore(paths.experiment_dir)
    if args.resume and not restorable:
        print(f"error: --resume: no sweep to resume at {paths.experiment_dir}", file=sys.stderr)
        return 2
    if not args.resume and restorable:
        print(f"error: a sweep named {paths.name!r} exists at {paths.experiment_dir}; pass --resume "
              "to continue it or --name for a new one", file=sys.stderr)
        return 2
    result = run_sweep(space, paths, tracking_uri=args.tracking_uri, address=args.address,
                       resume=args.resume, num_cpus=args.num_cpus,
                       reuse_actors=not args.no_reuse_actors, report=not args.no_report)
    print(json.dumps(result, indent=2, default=str))
    return 0


def run_sweep(space: Any, paths: SweepPaths, *, tracking_uri: str | None = None,
              address: str | None = None, resume: bool = False, num_cpus: int | None = None,
              reuse_actors: bool = True, report: bool = True,
              extra_callbacks: list[Any] = ()) -> dict[str, Any]:
    """Run (or resume) the sweep to the end; returns a summary."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sweeps import tracking
    from sweeps.search import fail_orphaned_trials, make_searcher
    from sweeps.trial import TrialContext, run_trial
    from vae.train import resolve_tracking_uri

    spec = space.spec
    tracking_uri = resolve_tracking_uri(tracking_uri or space.base_config.tracking.tracking_uri)
    state_dir = paths.local_state_dir
    state_dir.mkdir(parents=True, exist_ok=True)

    client = tracking.client_for(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, space.base_config.tracking.experiment,
                                               tracking.default_artifact_location(tracking_uri))
    parent_run_id = tracking.open_parent_run(client, experiment_id, paths.name,
                                             state_dir / STATE_FILE)
    update_state(state_dir, tracking_uri=tracking_uri, study_name=paths.name, max_t=space.max_t,
                 time_attr=spec.scheduler.time_attr, mode=spec.objective.mode,
                 objective=spec.objective.metric, experiment_dir=paths.experiment_dir)
    if not resume:
        client.log_text(parent_run_id, space.raw_text, f"search_space/{space.path.name}")
        client.log_text(parent_run_id, space.base_config.to_yaml(), "base_config.yaml")
        for key, value in {"space": str(space.path), "num_samples": spec.num_samples,
                           "objective": spec.objective.metric, "sampler": spec.searcher.sampler,
                           "scheduler": spec.scheduler.type}.items():
            client.log_param(parent_run_id, key, value)

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, log_to_driver=True)
    trial_tracking_uri = tracking_uri
    if sum(node["Alive"] for node in ray.nodes()) > 1:  # trials may run on other machines
        trial_tracking_uri = reachable_tracking_uri(tracking_uri, ray.util.get_node_ip_address())
    context = TrialContext(
        sweep_name=paths.name, base_config=space.base_config.to_dict(),
        tracking_uri=trial_tracking_uri,
        experiment_id=experiment_id, parent_run_id=parent_run_id,
        objective_metric=spec.objective.metric,
        max_kbps=spec.rate_budget.max_kbps if spec.rate_budget else None,
        penalty_per_kbps=spec.rate_budget.penalty_per_kbps if spec.rate_budget else 1.0,
        cpus_per_trial=spec.resources.cpu, json_params=space.json_params)
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    status_callback = tracking.TrialRunStatusCallback(
        tracking_uri, experiment_id, parent_run_id, space.max_t, spec.scheduler.time_attr)
    if resume:
        tuner = tune.Tuner.restore(paths.experiment_dir, trainable=trainable,
                                   resume_unfinished=True, resume_errored=False)
    else:
        searcher = make_searcher(space, f"sqlite:///{state_dir / OPTUNA_DB}", paths.name)
        if spec.scheduler.type == "asha":
            scheduler = ASHAScheduler(time_attr=spec.scheduler.time_attr, max_t=space.max_t,
                                      grace_period=spec.scheduler.grace_period,
                                      reduction_factor=spec.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric="objective", mode=spec.objective.mode, search_alg=searcher,
                scheduler=scheduler, num_samples=spec.num_samples,
                max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=reuse_actors,
                trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=paths.name, storage_path=paths.storage_path,
                callbacks=[status_callback, *extra_callbacks],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                verbose=1),
        )
    results = tuner.fit()

    outcomes = {}
    for result in results:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or Path(result.path).name.removeprefix("trial_")
        progress = int((result.metrics or {}).get(spec.scheduler.time_attr, 0))
        outcome = tracking.trial_outcome(bool(result.error), progress, space.max_t)
        outcomes[trial_id] = (outcome, repr(result.error)[-4900:] if result.error else None)
    counts = tracking.reconcile(client, experiment_id, parent_run_id, outcomes)
    orphans = fail_orphaned_trials(f"sqlite:///{state_dir / OPTUNA_DB}", paths.name)

    summary: dict[str, Any] = {"sweep": paths.name, "experiment_dir": paths.experiment_dir,
                               "mlflow": {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id},
                               "optuna_storage": f"sqlite:///{state_dir / OPTUNA_DB}",
                               "trials": counts, "optuna_orphans_failed": orphans}
    ok = [r for r in results if not r.error and r.metrics and "objective" in r.metrics]
    if ok:
        best = (min if spec.objective.mode == "min" else max)(ok, key=lambda r: r.metrics["objective"])
        summary["best"] = {"trial_id": best.metrics.get("trial_id"), "objective": best.metrics["objective"],
                           "config": {k: v for k, v in best.config.items()}}
    if report and ok:
        from sweeps.report import build_report

        report_dir = state_dir / "report"
        build_report(paths, report_dir)
        client.log_artifacts(parent_run_id, str(report_dir), "report")
        summary["report"] = str(report_dir)
    client.set_terminated(parent_run_id, "FINISHED")
    return summary


if __name__ == "__main__":
    sys.exit(main())
