"""The report's figures, each titled with how many trials it shows and which ones: matplotlib
plots of the trial table (learning curves, slice, importance bars; the rate–distortion and front
plots are sweeps/results/front.py's) and Optuna's parallel coordinates of the study's completed
trials. Every figure names trials by the report's trial ids and draws each outcome the same way.
Each plot function returns the :class:`Analysis` that the report's trials.md and summary.json state.
File names are the report's (sweeps/results/report.py documents them)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a driver or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, OBJECTIVE, OUTCOMES  # noqa: E402
from sweeps.results.plot_layout import clear_colorbar  # noqa: E402

DPI = 120
PARAM_PREFIX = "param:"  # the trial table's columns of searched values (sweeps/results/report.py)
AT_BEST_REPORT = "each at its best report"
COMPLETED_ONLY = "completed trials only, at their best report (pruned ones trained less)"


@dataclass(frozen=True)
class Style:
    marker: str
    linestyle: str
    color: str
    label: str


# How each outcome is drawn in every figure, in legend order: pruned trials stopped early (dashed).
OUTCOME_STYLE = {"completed": Style("o", "-", "C0", "completed"),
                 "pruned": Style("x", "--", "C7", "pruned (stopped by ASHA)"),
                 "failed": Style("s", ":", "C1", "failed")}
BEST_COLOR = "C3"  # the best trial, in every figure
INFEASIBLE_COLOR = "0.6"  # hollow: a trial whose best report violates a constraint
BETTER = {"min": "lower is better", "max": "higher is better"}  # an axis label's mode


def style_of(outcome: str) -> Style:
    """The outcome's style; a trial still running when the report is made gets its own."""
    return OUTCOME_STYLE.get(outcome, Style(".", "-.", "C2", outcome))


@dataclass(frozen=True)
class Analysis:
    """What one analysis of the report used: its trials, by outcome, and which ones in words;
    the figure written, or why there is none."""

    name: str
    uses: str
    outcomes: dict[str, int]
    file: str | None = None
    note: str = ""

    @property
    def trials(self) -> int:
        return sum(self.outcomes.values())

    def breakdown(self) -> str:
        """``"2 completed, 6 pruned"``."""
        return ", ".join(f"{n} {outcome}" for outcome, n in self.outcomes.items())

    def count(self) -> str:
        """``"8 trials (2 completed, 6 pruned)"``: what every figure's title says."""
        noun = "trial" if self.trials == 1 else "trials"
        return f"{self.trials} {noun} ({self.breakdown()})" if self.trials else f"0 {noun}"

    def title(self) -> str:
        return f"{self.name}: {self.count()}\n{self.uses}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "trials": self.trials, "outcomes": self.outcomes,
                "uses": self.uses, **({"note": self.note} if self.note else {})}


def outcome_counts(rows: pd.DataFrame) -> dict[str, int]:
    """How many of ``rows`` ended each way, in OUTCOMES order (then any other state)."""
    counts = rows["outcome"].value_counts() if len(rows) else pd.Series(dtype=int)
    order = [*OUTCOMES, *sorted(set(counts.index) - set(OUTCOMES))]
    return {outcome: int(counts[outcome]) for outcome in order if outcome in counts}


def reported(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The trials with a finite value in each of ``columns`` (at their best report)."""
    finite = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    return table[np.isfinite(finite).all(axis=1)]


def save(fig: plt.Figure, out: Path) -> None:
    # bbox "tight" rather than tight_layout: labels and colour bars sit outside the axes
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def best_row(table: pd.DataFrame) -> pd.Series | None:
    """The report's best trial: its first row, unless no trial reported (or it failed)."""
    if table.empty or table.iloc[0]["outcome"] == "failed" or pd.isna(table.iloc[0][BEST_OBJECTIVE]):
        return None
    return table.iloc[0]


def outcome_scatter(ax: plt.Axes, points: pd.DataFrame, x: Any, y: str) -> None:
    """``points`` by outcome, each in its style; ``x`` a column or one x value per point."""
    xs = points[x] if isinstance(x, str) else pd.Series(x, index=points.index)
    for outcome in outcome_counts(points):
        style = style_of(outcome)
        subset = points.outcome == outcome
        ax.scatter(xs[subset], points.loc[subset, y], marker=style.marker, color=style.color,
                   label=style.label)


def star_best(ax: plt.Axes, x: float, y: float, label: str | None) -> None:
    ax.scatter([x], [y], marker="*", s=250, facecolors="none", edgecolors=BEST_COLOR,
               linewidths=1.5, zorder=3, label=label)


# ---- Optuna's view of the study ------------------------------------------------------------------

def completed_analysis(study: Any, name: str) -> Analysis:
    """What an analysis of the study's completed trials uses (Optuna's COMPLETE is the report's
    completed: a trial that reached max_t, valued at its best report)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return Analysis(name, COMPLETED_ONLY, {"completed": len(complete)} if complete else {})


def plot_parallel_coordinate(study: Any, target_name: str, out: Path) -> Analysis:
    """Optuna's parallel coordinates of the study's completed trials (none: no figure)."""
    import optuna
    from optuna.visualization import matplotlib as optuna_mpl

    analysis = completed_analysis(study, "Parallel coordinates")
    if not analysis.trials:
        return replace(analysis, note="not drawn: no completed trial")
    # Optuna's look (its worst trial's line is white: on grey, not on white), for this figure only
    with warnings.catch_warnings(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental API
        # One completed trial gives an axis of zero width, which matplotlib widens itself
        warnings.filterwarnings("ignore", message="Attempting to set identical")
        try:
            ax = optuna_mpl.plot_parallel_coordinate(study, target_name=target_name)
        except (ValueError, RuntimeError) as exc:  # e.g. a parameter that never varied
            return replace(analysis, note=f"not drawn: Optuna: {exc}")
        ax.set_title(analysis.title(), y=1.03)
        fig = ax.figure
        fig.set_size_inches(max(7.0, fig.get_size_inches()[0]), 4.8)
        clear_colorbar(fig)
    save(fig, out)
    return replace(analysis, file=out.name)


def plot_importance(values: dict[str, float], analysis: Analysis, out: Path) -> Analysis:
    """Bars of the importances the report computed (the same numbers as trials.md); no figure
    when there are none (``analysis.note`` says why)."""
    if not values:
        return analysis
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(values) + 1.8))
    names = list(values)[::-1]  # largest on top
    bars = ax.barh(names, [values[n] for n in names], color=OUTCOME_STYLE["completed"].color)
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, max(values.values()) * 1.15 or 1)
    ax.set_xlabel("importance (sums to 1)")
    ax.set_title(analysis.title())
    save(fig, out)
    return replace(analysis, file=out.name)


# ---- the trial table -----------------------------------------------------------------------------

def param_scales(study: Any) -> dict[str, str]:
    """Each searched parameter's axis as the search space defines it: log, linear or categorical."""
    import optuna

    scales = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                scales[name] = "categorical"
            else:
                scales[name] = "log" if getattr(dist, "log", False) else "linear"
    return scales


def plot_slice(table: pd.DataFrame, scales: dict[str, str], objective_name: str,
               out: Path) -> Analysis:
    """Each trial's best objective against each searched value, one panel per parameter, by
    outcome, the best trial starred and named by its trial id."""
    params = [c for c in table.columns if c.startswith(PARAM_PREFIX)]
    points = reported(table, BEST_OBJECTIVE)
    analysis = Analysis("Slice", f"{AT_BEST_REPORT}, against each searched value",
                        outcome_counts(points))
    if points.empty or not params:
        return replace(analysis, note="not drawn: no trial reported")
    fig, axes = plt.subplots(1, len(params), figsize=(max(7.0, 3.2 * len(params)), 4.2),
                             sharey=True, squeeze=False)
    best = best_row(table)
    for ax, column in zip(axes.flat, params):
        name = column.removeprefix(PARAM_PREFIX)
        xs = slice_positions(ax, points[column], scales.get(name) or inferred_scale(points[column]))
        outcome_scatter(ax, points, xs, BEST_OBJECTIVE)
        if best is not None:
            star_best(ax, xs[best.name], best[BEST_OBJECTIVE], f"best: {best.trial_id}")
        ax.set_xlabel(name)
        ax.tick_params(axis="x", labelrotation=30)
    axes.flat[0].set_ylabel(f"{objective_name} (best report)")
    axes.flat[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(analysis.title())
    save(fig, out)
    return replace(analysis, file=out.name)


def inferred_scale(values: pd.Series) -> str:
    """The axis of a parameter the study holds no distribution for (e.g. a trial Optuna never
    suggested): linear when every value is a number, else categories."""
    return "linear" if pd.to_numeric(values.dropna(), errors="coerce").notna().all() else "categorical"


def slice_positions(ax: plt.Axes, values: pd.Series, scale: str) -> pd.Series:
    """Where each value goes on the panel's x axis: categories at 0..n-1 (labelled with their
    values), numbers as they are on a log or linear axis."""
    if scale != "categorical":
        ax.set_xscale("log" if scale == "log" else "linear")
        return values.astype(float)
    names = values.dropna().astype(str)
    categories = sorted(names.unique(), key=category_order)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlim(-0.5, len(categories) - 0.5)
    return names.map(categories.index).reindex(values.index)  # a trial without it: not drawn


def category_order(value: str) -> tuple[int, float, str]:
    """Numeric choices in numeric order, then the others by name."""
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value


def plot_learning_curves(table: pd.DataFrame, histories: dict[str, pd.DataFrame],
                         objective_name: str, out: Path) -> Analysis:
    """Every trial's objective by step in its outcome's style (pruned dashed, failed dotted);
    the best trial thick, in the best colour and its outcome's line style, its best report
    starred. Each legend entry is an artist drawn, so it shows what the curves look like."""
    curves = {row.trial_id: finite_history(histories.get(row.trial_id)) for row in table.itertuples()}
    drawn = table[[not curves[t].empty for t in table.trial_id]]
    analysis = Analysis("Learning curves", "every report of each trial", outcome_counts(drawn))
    if drawn.empty:
        return replace(analysis, note="not drawn: no trial reported")
    fig, ax = plt.subplots(figsize=(7, 5))
    best = best_row(table)
    best_id = best.trial_id if best is not None else None
    labelled: set[str] = set()
    # the best trial last: on top of the others
    for row in sorted(drawn.itertuples(), key=lambda r: r.trial_id == best_id):
        curve, style = curves[row.trial_id], style_of(row.outcome)
        if row.trial_id == best_id:
            label, color, width, alpha = f"best trial: {best_id} ({row.outcome})", BEST_COLOR, 2.5, 1.0
        else:
            label = None if row.outcome in labelled else style.label
            color, width, alpha = style.color, 1.0, 0.6
            labelled.add(row.outcome)
        ax.plot(curve["step"], curve[OBJECTIVE], linestyle=style.linestyle, marker=".",
                color=color, linewidth=width, alpha=alpha, label=label)
    if best is not None:
        ax.scatter([best[BEST_STEP]], [best[BEST_OBJECTIVE]], marker="*", s=250, color=BEST_COLOR,
                   zorder=3, label=f"its best report: {best[BEST_OBJECTIVE]:.4g} at step "
                   f"{best[BEST_STEP]:g}")
    ax.set_xlabel("generator step")
    ax.set_ylabel(f"objective: {objective_name}")
    ax.set_title(analysis.title())
    ax.legend(fontsize=8)
    save(fig, out)
    return replace(analysis, file=out.name)


def finite_history(history: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's reports with a finite objective (none: an empty frame)."""
    if history is None or history.empty or OBJECTIVE not in history or "step" not in history:
        return pd.DataFrame(columns=["step", OBJECTIVE])
    return history[np.isfinite(pd.to_numeric(history[OBJECTIVE], errors="coerce"))]
