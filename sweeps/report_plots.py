"""The report's figures: Optuna's own matplotlib plots of the study (importance, parallel
coordinates, slice) and matplotlib plots of the trial table (rate–distortion, learning curves).
File names are the report's (sweeps/report.py documents them)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a driver or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, OBJECTIVE  # noqa: E402

# How each outcome is drawn, in legend order: pruned trials stopped early, so their lines are dashed.
OUTCOME_STYLE = {"completed": ("o", "-"), "pruned": ("x", "--"), "failed": ("s", ":")}
OUTCOME_LABEL = {"completed": "completed", "pruned": "pruned (stopped by ASHA)", "failed": "failed"}
DPI = 120


def save(fig: plt.Figure, out: Path) -> None:
    # bbox "tight" rather than tight_layout: Optuna's figures carry colour-bar axes it cannot lay out
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def optuna_plots(study: Any, target_name: str, out_dir: Path) -> list[str]:
    """importance.png, parallel_coordinate.png and slice.png of the study's completed trials,
    through optuna.visualization.matplotlib; the ones the study has too few trials for are
    left out. Returns the file names written."""
    import optuna
    from optuna.visualization import matplotlib as optuna_mpl

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {"parallel_coordinate.png": optuna_mpl.plot_parallel_coordinate,
             "slice.png": optuna_mpl.plot_slice}
    if len(complete) >= 2:  # importance needs the objective to vary
        plots = {"importance.png": optuna_mpl.plot_param_importances, **plots}
    written = []
    for name, plot in plots.items() if complete else ():
        with warnings.catch_warnings():  # Optuna marks its matplotlib backend experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # One completed trial gives an axis of zero width, which matplotlib widens itself
            warnings.filterwarnings("ignore", message="Attempting to set identical")
            try:
                axes = plot(study, target_name=target_name)
            except (ValueError, RuntimeError):  # e.g. a parameter that never varied
                continue
        fig = np.atleast_1d(axes).flat[0].figure
        fig.set_size_inches(max(7.0, fig.get_size_inches()[0]), 4.8)
        save(fig, out_dir / name)
        written.append(name)
    return written


def best_row(table: pd.DataFrame) -> pd.Series | None:
    """The report's best trial: its first row, unless no trial reported (or it failed)."""
    if table.empty or table.iloc[0]["outcome"] == "failed" or pd.isna(table.iloc[0][BEST_OBJECTIVE]):
        return None
    return table.iloc[0]


def plot_rate_distortion(table: pd.DataFrame, front: pd.DataFrame, rate: str, distortion: str,
                         out: Path) -> None:
    """Every trial at its best report, by outcome (only those present), ids labelled, the best
    trial starred, with the Pareto front."""
    fig, ax = plt.subplots(figsize=(7, 5))
    points = table.dropna(subset=[rate, distortion])
    for outcome, (marker, _) in OUTCOME_STYLE.items():
        subset = points[points.outcome == outcome]
        if not subset.empty:
            ax.scatter(subset[rate], subset[distortion], marker=marker, label=OUTCOME_LABEL[outcome])
    for _, row in points.iterrows():
        ax.annotate(str(row.trial_id), (row[rate], row[distortion]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if not front.empty:
        ax.step(front[rate], front[distortion], where="post", color="k", linewidth=1,
                label="Pareto front")
    best = best_row(table)
    if best is not None and pd.notna(best.get(rate)) and pd.notna(best.get(distortion)):
        ax.scatter([best[rate]], [best[distortion]], marker="*", s=250, facecolors="none",
                   edgecolors="red", linewidths=1.5, label=f"best: {best.trial_id}")
    ax.set_xlabel(f"latent rate, {rate} (kbit/s)")
    ax.set_ylabel(f"{distortion} (lower is better)")
    ax.set_title("Rate–distortion of every trial (at its best report)")
    ax.legend(fontsize=8)
    save(fig, out)


def plot_learning_curves(table: pd.DataFrame, histories: dict[str, pd.DataFrame],
                         objective_name: str, out: Path) -> None:
    """Every trial's objective by step: pruned dashed, failed dotted, the best trial thick with
    its best report starred."""
    fig, ax = plt.subplots(figsize=(7, 5))
    best = best_row(table)
    drawn: set[str] = set()
    for _, row in table.iterrows():
        history = histories.get(row.trial_id)
        if history is None or history.empty or OBJECTIVE not in history:
            continue
        finite = history[np.isfinite(history[OBJECTIVE])]
        is_best = best is not None and row.trial_id == best.trial_id
        _, style = OUTCOME_STYLE.get(row.outcome, ("o", "-"))
        label = None if row.outcome in drawn else OUTCOME_LABEL.get(row.outcome, row.outcome)
        drawn.add(row.outcome)
        ax.plot(finite["step"], finite[OBJECTIVE], linestyle=style, marker=".",
                linewidth=2.5 if is_best else 1, alpha=1 if is_best else 0.6,
                color="C3" if is_best else "C0" if row.outcome == "completed" else "C7",
                label=label)
    if best is not None:
        ax.scatter([best[BEST_STEP]], [best[BEST_OBJECTIVE]], marker="*", s=250, color="C3",
                   zorder=3, label=f"best: {best.trial_id} ({best[BEST_OBJECTIVE]:.4g})")
    ax.set_xlabel("generator step")
    ax.set_ylabel(f"objective: {objective_name}")
    ax.set_title("Learning curves of every trial")
    ax.legend(fontsize=8)
    save(fig, out)
