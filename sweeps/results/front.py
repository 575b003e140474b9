"""The report's Pareto front (sweeps/results/pareto.py over the trial table, each trial at its best
report): the front over every objective of the sweep as a table with its hypervolume and
reference point, the rate–distortion plot with the front of rate and distortion, a 2-D front per
pair of objectives when there are three or more (trials that violate a constraint drawn hollow,
grey; reference codecs as labelled diamonds), and Optuna's Pareto-front plot of a multi-objective
study. Failed trials are never on a front; the file names are sweeps/results/report.py's."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.results import pareto
from sweeps.results import plots
from sweeps.layout import BEST_STEP
from sweeps.objectives import RATE_METRIC, Constraint, Goal, total_violation
from sweeps.results.plot_layout import label_points
from sweeps.results.anchors import LABEL, draw_anchors
from vae.metric_table import VALIDATION_PREFIX

FRONT_CSV = "front.csv"
OPTUNA_PARETO_FILE = "pareto_optuna.png"


def row_metrics(table: pd.DataFrame, metrics: Sequence[str]) -> dict[Any, dict[str, float]]:
    """Each row's finite values of ``metrics``, by row label (missing ones left out)."""
    columns = list(dict.fromkeys(metrics))
    values = table.reindex(columns=columns).apply(pd.to_numeric, errors="coerce")
    return {label: {m: float(v) for m, v in row.items() if math.isfinite(v)}
            for label, row in values.astype(float).iterrows()}


def goal_metrics(goals: Sequence[Goal], constraints: Sequence[Constraint]) -> list[str]:
    return list(dict.fromkeys([g.metric for g in goals] + [c.metric for c in constraints]))


def table_front(table: pd.DataFrame, goals: Sequence[Goal],
                constraints: Sequence[Constraint] = ()) -> pareto.Front:
    """The front over ``goals`` of the trials that did not fail and meet ``constraints``;
    its members are the table's row labels, best of the first goal first."""
    metrics = row_metrics(table[table.outcome != "failed"], goal_metrics(goals, constraints))
    return pareto.pareto_front(list(metrics), metrics.__getitem__, goals, constraints)


def pareto_front(points: pd.DataFrame, *goals: Goal | str,
                 constraints: Sequence[Constraint] = ()) -> pd.DataFrame:
    """The rows of ``points`` on the front over ``goals`` (a bare metric name is minimised),
    best of the first goal first."""
    chosen = [goal if isinstance(goal, Goal) else Goal(goal, "min") for goal in goals]
    return points.loc[table_front(points, chosen, constraints).members]


def violating(table: pd.DataFrame, constraints: Sequence[Constraint]) -> pd.Index:
    """The rows whose best report violates a constraint (or lacks a constrained metric)."""
    if not constraints:
        return table.index[:0]
    metrics = row_metrics(table, [c.metric for c in constraints])
    return pd.Index([label for label, values in metrics.items()
                     if total_violation(constraints, values) > 0])


def infeasible_excluded(table: pd.DataFrame, goals: Sequence[Goal],
                        constraints: Sequence[Constraint]) -> int:
    """Trials that did not fail and reached every goal's value, but violate a constraint."""
    points = plots.reported(table[table.outcome != "failed"], *(g.metric for g in goals))
    return int(points.index.isin(violating(table, constraints)).sum())


def front_table(table: pd.DataFrame, front: pareto.Front,
                constraints: Sequence[Constraint]) -> pd.DataFrame:
    """One row per trial on the front: its id, outcome, the step of its best report, then each
    goal's and each constraint's value at that report (front.csv and trials.md)."""
    columns = ["trial_id", "outcome", BEST_STEP, *goal_metrics(front.goals, constraints)]
    return table.reindex(index=front.members, columns=columns).reset_index(drop=True)


def front_summary(table: pd.DataFrame, front: pareto.Front,
                  constraints: Sequence[Constraint]) -> dict[str, Any]:
    """summary.json's "front" (sweeps.results.pareto.front_summary, trials by id) and how many
    trials a constraint left out."""
    return {**pareto.front_summary(front, lambda label: str(table.loc[label, "trial_id"]),
                                   constraints),
            "infeasible_excluded": infeasible_excluded(table, front.goals, constraints)}


def front_markdown(summary: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    """trials.md's front section: what it is over, the hypervolume line, then the table."""
    goals = ", ".join(f"`{g['metric']}` ({g['mode']})" for g in summary["goals"])
    constraints, excluded = " and ".join(summary["constraints"]), summary["infeasible_excluded"]
    eligible = f"trials where {constraints}" if constraints else "trials"
    where = ("declared in the search space" if summary["reference_declared"] else "where the "
             f"search space declares none, each objective's worst value among the {eligible}")
    reference = ", ".join(f"{g['metric']} {r:.4g}" if r is not None else f"{g['metric']} none"
                          for g, r in zip(summary["goals"], summary["reference"]))
    left_out = (f"; {excluded} trial{' that violates' if excluded == 1 else 's that violate'} a "
                "constraint excluded" if constraints else "")
    return ["## Pareto front", "",
            f"Over {goals} among the {eligible}, each at its best report (failed ones left out): "
            f"{len(rows)} non-dominated, best `{summary['goals'][0]['metric']}` first{left_out}.",
            "",
            f"Hypervolume of the front: {summary['hypervolume']:.6g}, from the reference point "
            f"({reference}), {where}.", "",
            rows.to_markdown(index=False, floatfmt=".4g") if len(rows) else "No trial is on it.",
            ""]


def safe_name(metric: str) -> str:
    """A metric as a short file-name part: ``val/kl_kbps`` -> ``kl_kbps``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", metric.removeprefix(VALIDATION_PREFIX)).strip("_")


def pair_file(a: Goal, b: Goal) -> str:
    return f"front_{safe_name(a.metric)}_vs_{safe_name(b.metric)}.png"


def plot_pair_fronts(table: pd.DataFrame, goals: Sequence[Goal],
                     constraints: Sequence[Constraint], out_dir: Path,
                     references: pd.DataFrame | None = None) -> dict[str, plots.Analysis]:
    """With three goals or more, the front of each pair of them (sweeps.results.pareto.goal_pairs),
    each over the trials meeting the constraints; none with fewer."""
    if len(goals) < 3:
        return {}
    outside = violating(table, constraints)
    drawn = {}
    for a, b in pareto.goal_pairs(goals):
        front = pareto_front(table, a, b, constraints=constraints)
        file = pair_file(a, b)
        drawn[file.removesuffix(".png")] = plot_rate_distortion(
            table, front, a.metric, b.metric, out_dir / file, modes=(a.mode, b.mode),
            infeasible=outside, name=f"Front of {a.metric} and {b.metric}", references=references)
    return drawn


def plot_rate_distortion(table: pd.DataFrame, front: pd.DataFrame, rate: str, distortion: str,
                         out: Path, *, modes: tuple[str, str] = ("min", "min"),
                         infeasible: pd.Index | None = None, name: str = "Rate–distortion",
                         references: pd.DataFrame | None = None) -> plots.Analysis:
    """Every trial at its best report by outcome (``infeasible`` ones hollow, grey), the best
    starred, the Pareto front (best ``rate`` first), its ids and the best's, none over another;
    each of ``references`` (reference codecs: a ``label`` and figures by metric) that has both
    figures as a diamond with its label."""
    points = plots.reported(table, rate, distortion)
    outside = points.index.isin(infeasible if infeasible is not None else [])
    shown = (plots.reported(references, rate, distortion) if references is not None
             else pd.DataFrame(columns=[LABEL, rate, distortion]))
    uses = f"{plots.AT_BEST_REPORT}; ids: the Pareto front and the best" + (
        f"; hollow grey: {outside.sum()} violating a constraint" if outside.any() else "") + (
        f"; diamonds: {len(shown)} reference codecs at their coded rate" if len(shown) else "")
    analysis = plots.Analysis(name, uses, plots.outcome_counts(points))
    if points.empty:
        return replace(analysis, note=f"not drawn: no trial reported {rate} and {distortion}")
    fig, ax = plots.plt.subplots(figsize=(7, 5))
    plots.outcome_scatter(ax, points[~outside], rate, distortion)
    if outside.any():
        ax.scatter(points.loc[outside, rate], points.loc[outside, distortion], facecolors="none",
                   edgecolors=plots.INFEASIBLE_COLOR, label="violates a constraint")
    if not front.empty:
        ax.step(front[rate], front[distortion], where="post", color="k", linewidth=1,
                label="Pareto front")
    draw_anchors(ax, shown, rate, distortion, named=False)  # named below, with the ids
    best = plots.best_row(table)
    starred = best if best is not None and best.name in points.index else None
    labelled = front
    if starred is not None:
        plots.star_best(ax, starred[rate], starred[distortion], f"best: {starred.trial_id}")
        labelled = pd.concat([front, points.loc[[starred.name]]]).drop_duplicates(subset="trial_id")
    ax.set(title=analysis.title(), ylabel=f"{distortion} ({plots.BETTER[modes[1]]})", xlabel=(
        f"latent rate, {rate} (kbit/s)" if rate == RATE_METRIC else f"{rate} ({plots.BETTER[modes[0]]})"))
    ax.legend(fontsize=8)
    # the trials' ids and the reference codecs' names placed together: none covers another
    named = pd.concat([labelled.rename(columns={"trial_id": "name"}),
                       shown.rename(columns={LABEL: "name"})])[["name", rate, distortion]]
    label_points(ax, named, pd.concat([points, shown])[[rate, distortion]], rate, distortion,
                 starred, text="name")
    plots.save(fig, out)
    return replace(analysis, file=out.name)


def plot_optuna_pareto(study: Any, goals: Sequence[Goal], out: Path) -> plots.Analysis:
    """Optuna's Pareto-front plot of a multi-objective study's completed trials (its feasible
    front highlighted); the note says why there is none for a single-objective study, one
    without a completed trial, or more than the three objectives it can draw."""
    import optuna
    from optuna.visualization import matplotlib as optuna_mpl

    analysis = plots.completed_analysis(study, "Optuna's Pareto front")
    analysis = replace(analysis, uses="completed trials only, the values Optuna was told (each at "
                                      "its best report); its feasible front highlighted")
    if len(study.directions) < 2:
        return replace(analysis, note="not drawn: a single-objective study (one direction)")
    if not analysis.trials:
        return replace(analysis, note="not drawn: no completed trial")
    if len(study.directions) > 3:
        return replace(analysis, note=f"not drawn: Optuna draws 2 or 3 objectives, the study "
                                      f"has {len(study.directions)}")
    names = study.metric_names or [goal.metric for goal in goals]
    # Optuna's look, for this figure only (its plots set the ggplot style for every later one)
    with warnings.catch_warnings(), plots.plt.style.context("ggplot"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental API
        ax = optuna_mpl.plot_pareto_front(study, target_names=list(names))
        ax.set_title(analysis.title())
    plots.save(ax.figure, out)
    return replace(analysis, file=out.name)
