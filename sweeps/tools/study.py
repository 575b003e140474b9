"""Does a sweep beat training the default? ``sweep-study SPACE --corpus DIR -o OUT``

Three arms on the same data, with the same steps per trial: (a) the seed's default configuration
(the space's first starting point) trained once to max_t; (b) random search + ASHA; (c) TPE + ASHA,
(b) and (c) with the same number of trials. The searching arms' rate budget is the default's
measured rate (``rate_budget.max_kbps``, with the space's penalty), so their picks are compared
with the default at equal or lower kbps. Each arm's pick is its best trial by the space's
objective (best report, as the sweep ranks), exported as a bundle; OUT/study.md holds the table
(compute, the pick's mean and sampled mel distance, kbps, ratio to the default) and
OUT/rate_distortion.png every trial of every arm.

``--arms points`` instead trains each of the space's starting points once, nothing searched or
stopped: a comparison of fixed recipes (OUT/points.md: distortions, SI-SDR and rate of each).

For a space with several objectives, ``--arms tpe single`` compares the multi-objective search
with the same space ranked by its primary objective alone, at equal compute: OUT/front.md (each
arm's front and hypervolume from one reference point; sweeps/tools/study_front.py).

``--anchors opus:6,opus:12,mp3:32`` adds reference codecs scored on the corpus's validation split
as the trials are (sweeps/results/anchors.py): OUT/anchors.md and anchors.csv, and diamonds on
OUT/rate_distortion.png."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from sweeps.layout import SweepPaths
from sweeps.results.records import TrialRecord, sweep_trials
from sweeps.results.anchors import (add_anchors_argument, anchors_markdown, checked_anchors,
                                    draw_anchors, score_anchors)
from vae.cli import common
from vae.metric_table import METRICS

if TYPE_CHECKING:
    from sweeps.space.schema import SearchSpace

MEAN, SAMPLED, RATE = (METRICS[n].key for n in ("mel_distance", "mel_distance_sampled", "kl_kbps"))
WAVEFORM = tuple(METRICS[n].key for n in ("si_sdr", "si_sdr_sampled"))
# What each arm changes in the search space; every arm keeps the space's steps and data.
ARMS: dict[str, dict[str, Any]] = {
    "default": {"num_samples": 1, "scheduler": {"type": "none"}},
    "random": {"searcher": {"sampler": "random", "seed": 0}},
    "tpe": {},
    # every starting point once (num_samples = their count): fixed recipes side by side
    "points": {"scheduler": {"type": "none"}, "searcher": {"sampler": "random", "seed": 0}},
    # a multi-objective space ranked by its primary objective alone: today's single-objective
    # sweep at equal compute (arm_overrides fills it in from the space)
    "single": {},
}
SEARCH_ARMS = ("default", "random", "tpe")


def arm_overrides(raw: dict[str, Any], arm: str, corpus: Path, trials: int | None,
                  max_kbps: float | None = None) -> dict[str, Any]:
    """The space file's top-level sections as this arm runs them, on ``corpus``; ``max_kbps``
    replaces the space's rate budget (its penalty per kbps is kept)."""
    base = dict(raw.get("base") or {})
    base["overrides"] = {**(base.get("overrides") or {}), "data.root": str(corpus.resolve())}
    overrides: dict[str, Any] = {"name": f"{raw['name']}-{arm}", "base": base}
    if arm == "points":
        overrides["num_samples"] = len(raw.get("points_to_evaluate") or [])
    elif trials is not None:
        overrides["num_samples"] = trials
    if max_kbps is not None:
        overrides["rate_budget"] = {**(raw.get("rate_budget") or {}), "max_kbps": max_kbps}
    for key, value in ARMS[arm].items():
        overrides[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    if arm == "single" and raw.get("objectives"):
        primary = raw.get("primary") or raw["objectives"][0]["metric"]
        mode = next(o["mode"] for o in raw["objectives"] if o["metric"] == primary)
        overrides |= {"objectives": None, "primary": None, "constraints": [],
                      "objective": {"metric": primary, "mode": mode}}
    return overrides


def run_arm(space_path: Path, overrides: dict[str, Any], storage: Path,
            tracking_uri: str | None) -> SweepPaths:
    from sweeps.execution.driver import run_sweep
    from sweeps.space.schema import load_space

    space = load_space(space_path, overrides)
    paths = SweepPaths.resolve(str(storage), space.name)
    run_sweep(space, paths, tracking_uri=tracking_uri, report=False)
    return paths


def arm_summary(arm: str, trials: list[TrialRecord]) -> dict[str, Any]:
    """The arm's pick (its first trial: sweep_trials ranks best first) and its compute in steps."""
    pick = trials[0]
    return {"arm": arm, "trials": len(trials),
            "steps_trained": sum(t.steps_trained for t in trials),
            "pick": pick.trial_id, "objective": pick.value,
            "mel_distance": pick.metrics.get(MEAN), "mel_distance_sampled": pick.metrics.get(SAMPLED),
            "kl_kbps": pick.metrics.get(RATE), "config": pick.config}


def write_table(rows: list[dict[str, Any]], out: Path) -> str:
    from tabulate import tabulate

    default = next(r for r in rows if r["arm"] == "default")
    table = [[r["arm"], r["trials"], r["steps_trained"], r["pick"], r["mel_distance"],
              r["mel_distance_sampled"], r["kl_kbps"], r["max_kbps"],
              r["mel_distance_sampled"] / default["mel_distance_sampled"]] for r in rows]
    text = tabulate(table, headers=["arm", "trials", "steps trained", "pick", MEAN, SAMPLED, RATE,
                                    "kbps budget", "sampled vs default"], floatfmt=".3f",
                    tablefmt="github")
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps(rows, indent=2, default=str))
    return text


def write_points_table(trials: list[TrialRecord], raw: dict[str, Any], out: Path) -> str:
    """One row per starting point, in the space's order (each matched to the trial that ran its
    values: concurrent trials may be proposed in any order): what it sets beyond the first point,
    its distortions (mel and SI-SDR, mean and sampled decoding) and rate at its best report."""
    from tabulate import tabulate

    points = raw.get("points_to_evaluate") or []
    first = points[0] if points else {}
    ran = [next((t for t in trials if t.config == point), None) for point in points]
    baseline = ran[0].metrics.get(SAMPLED) if ran and ran[0] else None
    table = []
    for number, (point, trial) in enumerate(zip(points, ran), start=1):
        sets = ", ".join(f"{k}={v}" for k, v in point.items() if first.get(k) != v)
        metrics = trial.metrics if trial else {}
        sampled = metrics.get(SAMPLED)
        table.append([number, sets or "(the first point)", trial.steps_trained if trial else None,
                      metrics.get(MEAN), sampled, *(metrics.get(k) for k in WAVEFORM),
                      metrics.get(RATE),
                      sampled / baseline if sampled is not None and baseline else None])
    text = tabulate(table, headers=["point", "sets", "steps", MEAN, SAMPLED, *WAVEFORM, RATE,
                                    "sampled vs point 1"], floatfmt=".3f", tablefmt="github")
    (out / "points.md").write_text(text + "\n")
    return text


def plot(arms: dict[str, list[TrialRecord]], out: Path, references: Any = None) -> None:
    """Every trial of every arm, each arm's pick starred, and ``references`` (a DataFrame of
    reference codecs: sweeps/results/anchors.py) as labelled diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (arm, trials), marker in zip(arms.items(), "os^D"):
        points = [(t.metrics.get(RATE), t.metrics.get(SAMPLED)) for t in trials
                  if t.metrics.get(RATE) is not None and t.metrics.get(SAMPLED) is not None]
        if points:
            dots = ax.scatter(*zip(*points), marker=marker, alpha=0.6,
                              label=f"{arm} ({len(points)} trials)")
            ax.scatter(*points[0], marker="*", s=260, color=dots.get_facecolor()[0][:3],
                       edgecolor="k", zorder=3)  # the arm's pick, in the arm's colour
    draw_anchors(ax, references, RATE, SAMPLED)
    ax.set_xscale("log")  # rates span decades when the KL weight is searched
    ax.set_xlabel(f"latent rate, {RATE}")
    ax.set_ylabel(f"{SAMPLED} (lower is better)")
    ax.set_title("every trial of every arm; stars: each arm's pick")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rate_distortion.png", dpi=110)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = common.build_parser("sweep-study", __doc__)
    p.add_argument("space", help="search-space YAML (e.g. search_spaces/music_cpu.yaml)")
    p.add_argument("--corpus", required=True, help="folder of audio (sweep-corpus builds one)")
    common.add_out(p, "folder for the arms' sweeps, bundles, table and plot")
    p.add_argument("--trials", type=int, help="trials of the random and TPE arms (default: the space's)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(SEARCH_ARMS),
                   help="default: %(default)s; 'points' trains each starting point once")
    add_anchors_argument(p)
    common.add_tracking_uri(p)
    return p


def arm_space(space_path: Path, raw: dict[str, Any], arm: str, corpus: Path, trials: int | None
              ) -> SearchSpace:
    """The space as ``arm`` runs it; a SpaceError names the arm."""
    from sweeps.space.schema import SpaceError, load_space

    try:
        return load_space(space_path, arm_overrides(raw, arm, corpus, trials))
    except SpaceError as exc:  # e.g. a name too long once "-ARM" is appended
        raise SpaceError(exc.path, [f"as the {arm} arm runs it: {p}" for p in exc.problems]) from None


def checked_space(space_path: Path, corpus: Path, arms: Sequence[str], trials: int | None
                  ) -> dict[str, Any]:
    """The space file's sections, once the space and each arm's variant of it pass sweep-run's
    validation (SpaceError) and ``corpus`` holds usable train and valid audio as the folder
    source splits it (DatasetError): all before a folder is made or Ray starts."""
    from sweeps.space.schema import SpaceError, load_space
    from vae.data.datamodule import source_for
    from vae.data.source import Split
    from vae.user_files import parse_yaml

    space = load_space(space_path)
    raw = parse_yaml(space.raw_text, str(space_path))
    arm_spaces = [arm_space(space_path, raw, arm, corpus, trials) for arm in arms]
    config = arm_spaces[0].base_config  # every arm's, with data.root = the corpus
    if config.data.source != "folder":
        raise SpaceError(str(space_path), [
            f"data.source: {config.data.source!r} (base.config / base.overrides); expected "
            "'folder', as sweep-study trains on --corpus"])
    source = source_for(config)
    with warnings.catch_warnings(record=True) as noted:  # shown only if no error follows
        warnings.simplefilter("always")
        for split in get_args(Split):
            source.dataset(split, 1)
    for warning in noted:  # e.g. files skipped as shorter than a chunk, or resampled on each read
        print(f"warning: {warning.message}", file=sys.stderr)
    return raw


@common.exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    from sweeps.space.schema import SpaceError

    args = parser().parse_args(argv)
    out, corpus, space_path = Path(args.out).resolve(), Path(args.corpus), Path(args.space)
    if args.trials is not None and args.trials < 1:
        return common.fail(f"--trials {args.trials}: expected 1 or more")
    if not corpus.is_dir():
        return common.fail(f"--corpus {corpus}: not a folder")
    problem = common.writable_problem("-o", out)
    if problem:
        return common.fail(problem)
    arm_names = sorted(args.arms, key=list(ARMS).index)  # the default first
    anchors = checked_anchors(args.anchors)
    try:
        raw = checked_space(space_path, corpus, arm_names, args.trials)
    except SpaceError as exc:
        return common.fail(str(exc))
    return run_study(args, raw, space_path, corpus, out, arm_names, anchors)


def run_study(args: argparse.Namespace, raw: dict[str, Any], space_path: Path, corpus: Path,
              out: Path, arm_names: list[str], anchors: Sequence[Any] = ()) -> int:
    """Each arm's sweep and pick under ``out`` (the default's first: its rate budgets the
    others), then the tables, the reference codecs and the plot."""
    import ray

    from sweeps.results.export import export_best
    from sweeps.execution.progress import quiet_driver_logs

    quiet_driver_logs(local_ray=True)
    tracking_uri = args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    out.mkdir(parents=True, exist_ok=True)
    arms, rows = {}, []
    owns_ray = not ray.is_initialized()  # the arms share one local Ray; stop it if we started it
    try:
        budget = None  # the default's measured rate, once its arm has run
        for arm in arm_names:
            overrides = arm_overrides(raw, arm, corpus, args.trials, budget)
            paths = run_arm(space_path, overrides, out / "sweeps", tracking_uri)
            state, trials = sweep_trials(paths)
            arms[arm] = trials
            rows.append(arm_summary(arm, trials))
            rows[-1]["bundle"] = export_best(paths, out / "bundles" / arm)["bundle"]
            # a rate budget for the next arms (several objectives: the rate is one of them)
            if arm == "default" and rows[-1]["kl_kbps"] is not None and not raw.get("objectives"):
                budget = round(rows[-1]["kl_kbps"], 3)
            rows[-1]["max_kbps"] = (overrides.get("rate_budget") or raw.get("rate_budget") or {}
                                    ).get("max_kbps")
    finally:
        if owns_ray:
            ray.shutdown()
    if "default" in arms:
        print(write_table(rows, out))
    if "points" in arms:
        print(write_points_table(arms["points"], raw, out))
    if raw.get("objectives"):
        from sweeps.space.schema import load_space
        from sweeps.tools.study_front import compare_fronts

        space = load_space(space_path)
        print(compare_fronts(arms, space.goals, out, space.constraints))
    references = None
    if anchors:  # on the validation split every arm's trials are scored on
        config = arm_space(space_path, raw, arm_names[0], corpus, args.trials).base_config
        references = score_anchors(config, anchors, out)
        text = "\n".join(anchors_markdown(references))
        (out / "anchors.md").write_text(text)
        print(text)
    plot(arms, out, references)
    written = sorted(p.name for p in out.iterdir() if p.suffix in (".md", ".json", ".png"))
    print(f"study in {out}: {', '.join(written)}, bundles/")
    print(mlflow_lines(tracking_uri, state))
    return 0


def mlflow_lines(tracking_uri: str, state: dict[str, Any]) -> str:
    """Where the arms' runs are: the UI command for a local store and the ranked runs table."""
    from sweeps.layout import objective_mode
    from vae.training.mlflow import runs_page

    page = runs_page(tracking_uri, state["experiment_id"], objective_mode(state))
    if tracking_uri.startswith("http"):
        return f"MLflow: {page}"
    return f"MLflow: {common.runnable('mlflow', 'ui', '--backend-store-uri', tracking_uri)}\n" \
           f"  then open {page}"


if __name__ == "__main__":
    common.run(main)
