"""Promote a sweep's winners: ``sweep-promote SWEEP --top K --steps N [--workers W]``

Does the ranking of short trials hold when the K best configurations train much longer? SWEEP's K
best trials (its own ranking, by each trial's best objective) run again, each once, as a new sweep
(``SWEEP-promoted``, or --name) in the same storage and MLflow store through sweep-run's driver:
SWEEP's space with ``trainer.max_steps = N``, no early stopping, and exactly those K
configurations (points_to_evaluate, a searcher that proposes nothing else). Then:

- the sweeps point at each other: states (``promoted_from`` with trial ids new -> old,
  ``promoted_to``) and parent runs (tags promoted_from_run/_sweep, promoted_to_run/_sweep);
- short-run against long-run ranks, Kendall's τ and Spearman's ρ (sweeps/results/promotion.py):
  PROMOTED/report/promotion.md and .json, metrics promotion/kendall_tau and
  promotion/spearman_rho on both parent runs, a line in SWEEP's report (run sweep-report again);
- the promoted sweep's best trial exported as ``sweep-export PROMOTED -o DIR`` would.

SWEEP is read from its files (local or NFS storage). --resume continues an interrupted promotion."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

from sweeps.layout import (LayoutError, SweepPaths, add_storage_argument, load_state,
                           objective_mode, update_state)
from sweeps.results.promotion import (PROMOTION_JSON, PROMOTION_MD, RHO_METRIC, TAU_METRIC,
                                      match_points, rank_agreement, write_promotion)
from sweeps.results.records import TrialRecord, sweep_trials
from vae.cli import common

if TYPE_CHECKING:
    from sweeps.space.schema import SearchSpace

SPACE_ARTIFACTS = "search_space"  # where the driver logs the space file on the parent run
INTERRUPTED_EXIT = 130


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-promote", __doc__)
    parser.add_argument("sweep", help="the sweep whose best trials to promote (its sweep-run name)")
    parser.add_argument("--top", type=int, required=True, metavar="K", help="how many (2 or more)")
    parser.add_argument("--steps", type=int, required=True, metavar="N",
                        help="trainer.max_steps of the promoted trials")
    parser.add_argument("--workers", type=int, metavar="W",
                        help="data-parallel workers per trial (the space's resources.workers)")
    parser.add_argument("--name", help="the promoted sweep's name (default: SWEEP-promoted)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: the space's)")
    add_storage_argument(parser, "where the sweep is; the promoted sweep goes beside it")
    common.add_out(parser, "bundle folder for the promoted champion (default: ./best_PROMOTED)",
                   required=False)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted promotion")
    parser.add_argument("--address", help="Ray address; 'auto' joins a running cluster")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    return parser


def count_problem(args: argparse.Namespace) -> str | None:
    for flag, value, least in (("--top", args.top, 2), ("--steps", args.steps, 1),
                               ("--workers", args.workers, 1),
                               ("--max-concurrent", args.max_concurrent, 1),
                               ("--num-cpus", args.num_cpus, 1)):
        if value is not None and value < least:
            return f"{flag} {value}: expected an integer of {least} or more"
    return None


def chosen_trials(paths: SweepPaths, top: int) -> tuple[dict[str, Any], list[TrialRecord]]:
    """The sweep's state and its ``top`` best trials with a value (fewer, said on stderr, when
    it has fewer; a LookupError below 2: one configuration has no ranking to test)."""
    from sweeps.results.export import rankable_trials

    state, trials = rankable_trials(paths)
    if len(trials) < 2:
        raise LookupError(f"--top {top}: sweep {paths.name!r} has {len(trials)} ranked trial(s) "
                          "with a value; promoting needs 2 or more")
    if len(trials) < top:
        print(f"note: sweep {paths.name!r} has {len(trials)} ranked trials with a value, fewer "
              f"than --top {top}: promoting those {len(trials)}", file=sys.stderr)
    return state, trials[:top]


def space_file(state: dict[str, Any], paths: SweepPaths) -> dict[str, Any]:
    """The sweep's search-space file, as its parent MLflow run keeps it (parsed strictly)."""
    from sweeps.execution.tracking import client_for
    from vae.user_files import parse_yaml

    client = client_for(state["tracking_uri"])
    try:
        logged = client.list_artifacts(state["parent_run_id"], SPACE_ARTIFACTS)
        with TemporaryDirectory(prefix="sweep-space-") as folder:
            local = Path(client.download_artifacts(state["parent_run_id"], logged[0].path, folder))
            raw = parse_yaml(local.read_text(), f"{paths.name}'s {logged[0].path}")
    except Exception as exc:  # MLflow raises several types; IndexError when none was logged
        raise LayoutError(f"sweep {paths.name!r}: its search space could not be read from its "
                          f"parent run {state['parent_run_id']} at {state['tracking_uri']} "
                          f"({exc or type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise LayoutError(f"sweep {paths.name!r}: its logged search space is not a mapping")
    return raw


def json_params(raw: dict[str, Any]) -> tuple[str, ...]:
    """The space's params whose values travel JSON-encoded (as SearchSpace.json_params)."""
    from sweeps.space.schema import SpaceFile

    return tuple(name for name, p in SpaceFile.model_validate(raw).params.items() if p.json_encoded)


def promoted_raw(raw: dict[str, Any], name: str, base: dict[str, Any], points: list[dict[str, Any]],
                 args: argparse.Namespace, source: str) -> dict[str, Any]:
    """The first sweep's space file as the promotion runs it: its resolved base config inline (so
    the file stands alone) with max_steps N, no early stopping, a searcher that proposes only
    ``points`` (random after them, but there is no trial after them), one trial per point."""
    base = {**base, "trainer": {**base["trainer"], "max_steps": args.steps}}
    promoted = {**raw, "name": name, "base": {"overrides": base},
                "description": f"{source}'s top {len(points)} at {args.steps} steps "
                f"(sweep-promote). {raw.get('description') or ''}".strip(),
                "searcher": {**(raw.get("searcher") or {}), "sampler": "random"},
                "scheduler": {**(raw.get("scheduler") or {}), "type": "none", "max_t": None},
                "num_samples": len(points), "points_to_evaluate": points}
    if args.workers is not None:
        promoted["resources"] = {**(raw.get("resources") or {}), "workers": args.workers}
    if args.max_concurrent is not None:
        promoted["max_concurrent_trials"] = args.max_concurrent
    return promoted


def write_space(raw: dict[str, Any], folder: Path) -> SearchSpace:
    """``raw`` written to FOLDER/NAME.yaml and loaded (validated) from there."""
    import yaml

    from sweeps.space.schema import load_space

    path = folder / f"{raw['name']}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by sweep-promote\n" + yaml.safe_dump(raw, sort_keys=False))
    return load_space(path)


def exists_problem(paths: SweepPaths, resume: bool) -> str | None:
    """sweep-run's rule: a new name without --resume, an existing one with it."""
    from ray import tune

    restorable = tune.Tuner.can_restore(paths.experiment_dir)
    if resume and not restorable:
        return f"--resume: no sweep to resume at {paths.experiment_dir}"
    if not resume and (restorable or paths.state_file.is_file()):
        return (f"--name {paths.name}: a sweep of that name exists at {paths.experiment_dir}; "
                "pass --resume to continue it or --name for a new one")
    return None


@common.exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = count_problem(args)
    if problem:
        return common.fail(problem)
    try:
        first = SweepPaths.resolve(args.storage_path, args.sweep)
    except LayoutError as exc:
        return common.fail(f"SWEEP: {exc}")
    try:
        promoted = SweepPaths.resolve(args.storage_path, args.name or f"{args.sweep}-promoted")
    except LayoutError as exc:
        return common.fail(f"--name: {exc}")
    if promoted.name == first.name:
        return common.fail(f"--name {promoted.name}: expected a name other than SWEEP's")
    out = Path(args.out or f"best_{promoted.name}").resolve()
    try:
        state, chosen = chosen_trials(first, args.top)
    except LayoutError as exc:  # no such sweep (its state names the file it looked for)
        return common.fail(f"SWEEP {first.name}: {exc}")
    except LookupError as exc:
        return common.fail(str(exc))
    problem = exists_problem(promoted, args.resume) or common.writable_problem("-o", out)
    if problem:
        return common.fail(problem)
    try:
        raw = space_file(state, first)
        return promote(args, first, promoted, state, chosen, raw, out)
    except (LayoutError, LookupError) as exc:
        return common.fail(str(exc))


def promote(args: argparse.Namespace, first: SweepPaths, promoted: SweepPaths,
            state: dict[str, Any], chosen: list[TrialRecord], raw: dict[str, Any],
            out: Path) -> int:
    """Validate the promoted space (exit 2, nothing written), run it, then link, compare, export."""
    from sweeps.execution.guard import storage_problem, tracking_problem
    from sweeps.results.anchors import sweep_config
    from sweeps.space.schema import SpaceError, decode_sampled

    base = sweep_config(first, state)
    encoded = json_params(raw)
    points = [decode_sampled(t.config, encoded) for t in chosen]
    promoted_file = promoted_raw(raw, promoted.name, base.to_dict(), points, args, first.name)
    try:
        with TemporaryDirectory(prefix="sweep-promote-") as folder:
            write_space(promoted_file, Path(folder))
    except SpaceError as exc:
        return common.fail(str(exc))
    problem = storage_problem(promoted) or tracking_problem(state["tracking_uri"])
    if problem:
        return common.fail(problem)
    summary = run_promoted(args, promoted, promoted_file, state["tracking_uri"])
    if isinstance(summary, int):
        return summary
    new_state, new_trials = sweep_trials(promoted)
    pairs = match_points(chosen, new_trials, encoded)
    link(first, promoted, pairs, args.steps)
    mode = objective_mode(state)
    long = [None if t is None or t.outcome == "failed" else t.value for _, t in pairs]
    agreement = rank_agreement([t.value for t, _ in pairs], long, mode)
    info = {"sweep": promoted.name, "promoted_from": first.name,
            "objective": state.get("objective"), "mode": mode,
            "short_steps": base.trainer.max_steps, "long_steps": args.steps}
    text = write_promotion(promoted.report_dir, info,
                           [(old.trial_id, new.trial_id if new else None, points[i])
                            for i, (old, new) in enumerate(pairs)], agreement)
    log_figures(state["tracking_uri"], [state["parent_run_id"], new_state["parent_run_id"]],
                agreement.tau, agreement.rho, promoted.report_dir)
    from sweeps.results.export import export_best

    exported = export_best(promoted, out)
    print(text)
    print(f"Promoted champion: trial_{exported['trial_id']} -> {exported['bundle']}")
    summary = {**summary, "experiment_id": new_state.get("experiment_id"), "mode": mode}
    print(next_lines(first, promoted, summary, exported["bundle"]))
    return 0


def run_promoted(args: argparse.Namespace, paths: SweepPaths, raw: dict[str, Any],
                 tracking_uri: str) -> dict[str, Any] | int:
    """The promoted sweep through sweep-run's driver (its space file kept in the sweep's state
    folder, logged to its parent run); the summary, or an exit status."""
    import ray

    from sweeps.execution.driver import run_sweep
    from sweeps.execution.guard import driver_lock
    from sweeps.execution.progress import quiet_driver_logs

    quiet_driver_logs(local_ray=args.address is None)
    owns_ray = not ray.is_initialized()  # stop a local Ray we started (tests run several)
    try:
        with driver_lock(paths):
            space = write_space(raw, paths.state_dir)
            summary = run_sweep(space, paths, tracking_uri=tracking_uri, address=args.address,
                                resume=args.resume, num_cpus=args.num_cpus)
    except LayoutError as exc:  # another driver holds the lock
        return common.fail(str(exc))
    finally:
        if owns_ray:
            ray.shutdown()
    if summary.get("interrupted"):
        print(f"promotion {paths.name!r} interrupted; continue it with the same command plus "
              "--resume", file=sys.stderr)
        return INTERRUPTED_EXIT
    return summary


def link(first: SweepPaths, promoted: SweepPaths,
         pairs: list[tuple[TrialRecord, TrialRecord | None]], steps: int) -> None:
    """Both sweeps' states and parent MLflow runs point at each other."""
    from sweeps.execution.tracking import client_for

    update_state(promoted.state_dir, promoted_from={
        "sweep": first.name, "steps": steps,
        "trials": {new.trial_id: old.trial_id for old, new in pairs if new is not None}})
    state = load_state(first.state_dir)
    listed = [name for name in state.get("promoted_to") or [] if name != promoted.name]
    update_state(first.state_dir, promoted_to=[*listed, promoted.name])
    new_run = load_state(promoted.state_dir)["parent_run_id"]
    client = client_for(state["tracking_uri"])
    for run, tags in ((new_run, {"promoted_from_run": state["parent_run_id"],
                                 "promoted_from_sweep": first.name}),
                      (state["parent_run_id"], {"promoted_to_run": new_run,
                                                "promoted_to_sweep": promoted.name})):
        for key, value in tags.items():
            client.set_tag(run, key, value)


def log_figures(tracking_uri: str, runs: list[str], tau: float | None, rho: float | None,
                report_dir: Path) -> None:
    """τ and ρ on both parent runs; promotion.md and .json beside the promoted run's report."""
    from sweeps.execution.tracking import client_for

    client = client_for(tracking_uri)
    for run in runs:
        for key, value in ((TAU_METRIC, tau), (RHO_METRIC, rho)):
            if value is not None:
                client.log_metric(run, key, value)
    for name in (PROMOTION_MD, PROMOTION_JSON):
        client.log_artifact(runs[-1], str(report_dir / name), "report")


def next_lines(first: SweepPaths, promoted: SweepPaths, summary: dict[str, Any],
               bundle: str) -> str:
    """What to run next, runnable as printed."""
    from sweeps.execution.summary import next_commands

    where = ("--storage-path", first.storage_path)
    commands = [common.runnable("sweep-report", first.name, *where) + "  # with the promotion",
                *(c for c in next_commands(summary, promoted) if "sweep-export" not in c),
                f"{sys.executable} -c 'from vae.inference import load_bundle; "
                f"print(load_bundle(\"{bundle}\").model)'"]
    return "\nNext:\n" + "\n".join(f"  {command}" for command in commands)


if __name__ == "__main__":
    common.run(main)
