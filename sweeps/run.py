"""Run a sweep: ``sweep-run search_spaces/kl.yaml [--resume] [--address auto] ...``

(``python sweeps/run.py ...`` is the same command.)

Validates the search space before anything starts (exit 2 on any problem), then runs Ray Tune
with Optuna proposing configs, ASHA stopping poor trials and MLflow recording every trial.

Before Ray starts: the sweep name (a safe folder name), the storage (writable), the MLflow store
(answers within seconds) and the driver lock (one driver per sweep name) are checked, in that
order, so that a refusal leaves no folder or lock behind; each problem is one line and exit 2. Ctrl-C stops the sweep resumably: exit 130, the parent MLflow run
KILLED, in-flight trials left to --resume."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sweeps.layout import LayoutError, SweepPaths, add_storage_argument
from vae.cli import common

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-run", __doc__)
    parser.add_argument("space", help="search-space YAML (see search_spaces/)")
    parser.add_argument("--name", help="sweep name (default: the space's name)")
    parser.add_argument("--num-samples", type=int, help="trials to run (default: the space's)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: the space's)")
    parser.add_argument("--address", help="Ray address; 'auto' joins a running cluster "
                        "(default: start a local Ray)")
    add_storage_argument(parser, "where results and checkpoints go: a local dir, NFS or s3:// "
                         "(shared by every node on a cluster)")
    common.add_tracking_uri(parser, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then "
                            "the base config's, then ./mlflow.db)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--no-reuse-actors", action="store_true",
                        help="start a fresh worker per trial (slower start; for benchmarks)")
    parser.add_argument("--no-report", action="store_true", help="skip the end-of-sweep report")
    parser.add_argument("--json", action="store_true",  # issue 12 hook
                        help="print the end-of-sweep summary as raw JSON (for scripts)")
    return parser


def resume_problem(paths: SweepPaths, resume: bool) -> str | None:
    """Why --resume (or its absence) does not fit what is at the sweep's experiment dir."""
    from ray import tune

    restorable = tune.Tuner.can_restore(paths.experiment_dir)
    if resume and not restorable:
        return f"--resume: no sweep to resume at {paths.experiment_dir}"
    if not resume and restorable:
        return (f"a sweep named {paths.name!r} exists at {paths.experiment_dir}; pass --resume "
                "to continue it or --name for a new one")
    return None


def local_cpu_problem(space: Any, address: str | None, num_cpus: int | None) -> str | None:
    """Why a local Ray could never place one trial (Tune would wait forever); a cluster
    (--address) is checked by Ray itself, as its size is not known here."""
    if address is not None:
        return None
    available = num_cpus or os.cpu_count() or 1
    resources = space.spec.resources
    wanted = resources.cpu * resources.workers
    if wanted > available:
        key, per = "resources.cpu", ""
        if resources.workers > 1:
            key, per = "resources.workers", f" ({resources.workers} workers x {resources.cpu:g})"
        return (f"{space.path}: {key}: {wanted:g} CPUs per trial{per}, but the local Ray has "
                f"{available} (--num-cpus or this machine); lower it, or pass --address")
    return None


@common.exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Validate everything before Ray or MLflow is touched.
    from sweeps.space.schema import SpaceError, load_space

    overrides: dict[str, Any] = {}
    if args.num_samples is not None:
        overrides["num_samples"] = args.num_samples
    if args.max_concurrent is not None:
        overrides["max_concurrent_trials"] = args.max_concurrent
    try:
        space = load_space(args.space, overrides)
    except SpaceError as exc:
        return common.fail(str(exc))
    problem = local_cpu_problem(space, args.address, args.num_cpus)
    if problem:
        return common.fail(problem)
    try:  # the space's own name passed load_space's check: only --name can fail here
        paths = SweepPaths.resolve(args.storage_path, args.name or space.name)
    except LayoutError as exc:
        return common.fail(f"--name: {exc}")
    return guarded_run(args, space, paths)


def guarded_run(args: argparse.Namespace, space: Any, paths: SweepPaths) -> int:
    """Storage, resume, tracking and lock checks (exit 2), then the sweep (130 if interrupted)."""
    from sweeps.execution.guard import driver_lock, storage_problem, tracking_problem
    from sweeps.execution.progress import quiet_driver_logs  # issue 12 hook
    from sweeps.execution.summary import print_summary
    from vae.training.mlflow import resolve_tracking_uri

    quiet_driver_logs(local_ray=args.address is None)  # issue 12 hook: before any store opens

    tracking_uri = resolve_tracking_uri(args.tracking_uri or space.base_config.tracking.tracking_uri)
    # Refused before the lock creates the sweep's folder: an unwritable storage, --resume of a
    # sweep never started, an unusable store (last: opening a sqlite store creates it). Whether a
    # sweep exists without --resume is asked under the lock, so that a live driver is named.
    problem = storage_problem(paths) or (resume_problem(paths, True) if args.resume else None)
    problem = problem or tracking_problem(tracking_uri)
    if problem:
        return common.fail(problem)
    try:
        with driver_lock(paths):
            problem = resume_problem(paths, args.resume)
            if problem:
                return common.fail(problem)
            from sweeps.execution.driver import run_sweep

            result = run_sweep(space, paths, tracking_uri=tracking_uri, address=args.address,
                               resume=args.resume, num_cpus=args.num_cpus,
                               reuse_actors=not args.no_reuse_actors, report=not args.no_report)
    except LayoutError as exc:  # the lock is held by a live driver
        return common.fail(str(exc))
    print_summary(result, paths, space, as_json=args.json)  # issue 12 hook
    if result.get("interrupted"):
        print(f"sweep {paths.name!r} interrupted; continue it with the same command plus --resume",
              file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    common.run(main)
