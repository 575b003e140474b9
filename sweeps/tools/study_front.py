"""A multi-objective study's comparison (``sweep-study SPACE --arms tpe single``): each arm's
trials over the space's objectives, their fronts and hypervolumes from one reference point, the
trials on any front, and whether one of them reconstructs the waveform (SI-SDR >= 0 dB) at a mel
distance within 10% of the best any arm reached. OUT/front.md, OUT/front.json, OUT/fronts.png."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sweeps.objectives import Constraint, Goal
from sweeps.results.pareto import goal_pairs, pareto_front
from sweeps.results.records import TrialRecord
from vae.metric_table import METRICS

SISDR, MEL = METRICS["si_sdr_sampled"].key, METRICS["mel_distance_sampled"].key
MEL_SLACK = 1.10  # "within 10% of the best mel distance" (issue 19's question)


def common_reference(arms: dict[str, list[TrialRecord]], goals: list[Goal]) -> list[Goal]:
    """The goals with every reference set: the declared one, else the worst value any arm saw,
    so each arm's hypervolume is measured from the same point."""
    filled = []
    for goal in goals:
        seen = [t.metrics[goal.metric] for trials in arms.values() for t in trials
                if goal.metric in t.metrics]
        worst = (max if goal.mode == "min" else min)(seen) if seen else 0.0
        filled.append(goal if goal.reference is not None else replace(goal, reference=worst))
    return filled


def compare_fronts(arms: dict[str, list[TrialRecord]], goals: list[Goal], out: Path,
                   constraints: Sequence[Constraint] = ()) -> str:
    """front.md / front.json / fronts.png for ``arms``, each arm's front over ``goals`` among
    its trials meeting ``constraints`` (the multi-objective space's, for every arm); returns
    the Markdown."""
    from tabulate import tabulate

    goals = common_reference(arms, goals)
    reported = {arm: [t for t in trials if t.outcome != "failed"] for arm, trials in arms.items()}
    fronts = {arm: pareto_front(trials, lambda t: t.metrics, goals, constraints)
              for arm, trials in reported.items()}
    best_mel = min((t.metrics[MEL] for trials in reported.values() for t in trials if MEL in t.metrics),
                   default=None)
    summary = [[arm, len(reported[arm]), sum(t.steps_trained for t in reported[arm]),
                len(front.members), front.hypervolume] for arm, front in fronts.items()]
    rows = []
    for arm, front in fronts.items():
        for trial in front.members:
            metrics = trial.metrics
            reconstructs = (metrics.get(SISDR, -1e9) >= 0 and best_mel is not None
                            and metrics.get(MEL, 1e9) <= MEL_SLACK * best_mel)
            rows.append([arm, trial.trial_id, trial.outcome, metrics.get("step"),
                         *(metrics.get(goal.metric) for goal in goals),
                         "yes" if reconstructs else "no"])
    reference = ", ".join(f"{goal.metric} {goal.reference:.4g}" for goal in goals)
    text = "\n\n".join([
        f"Hypervolume from ({reference}); each arm's trials at their best report.",
        tabulate(summary, headers=["arm", "trials", "steps trained", "on its front", "hypervolume"],
                 floatfmt=".4g", tablefmt="github"),
        f"Trials on each arm's front (best mel distance of any arm: "
        f"{best_mel if best_mel is None else f'{best_mel:.4g}'}):",
        tabulate(rows, headers=["arm", "trial", "outcome", "step", *(g.metric for g in goals),
                                f"SI-SDR >= 0 and mel <= {MEL_SLACK:g} x best"],
                 floatfmt=".4g", tablefmt="github")])
    (out / "front.md").write_text(text + "\n")
    (out / "front.json").write_text(json.dumps({
        "reference": {goal.metric: goal.reference for goal in goals}, "best_mel": best_mel,
        "arms": {arm: {"hypervolume": front.hypervolume,
                       "front": [t.trial_id for t in front.members]}
                 for arm, front in fronts.items()}}, indent=2))
    plot_fronts(reported, fronts, goals, out / "fronts.png")
    return text


def plot_fronts(arms: dict[str, list[TrialRecord]], fronts: dict[str, Any], goals: list[Goal],
                out: Path) -> None:
    """One panel per pair of objectives: every arm's trials, its front's members ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = goal_pairs(goals)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        for (arm, trials), marker in zip(arms.items(), "os^D"):
            points = [(t.metrics[x.metric], t.metrics[y.metric]) for t in trials
                      if x.metric in t.metrics and y.metric in t.metrics]
            if not points:
                continue
            dots = ax.scatter(*zip(*points), marker=marker, alpha=0.5, label=f"{arm} ({len(points)})")
            members = [(t.metrics[x.metric], t.metrics[y.metric]) for t in fronts[arm].members]
            if members:
                ax.scatter(*zip(*members), marker=marker, s=110, facecolors="none",
                           edgecolors=dots.get_facecolor()[0][:3], linewidths=1.5)
        ax.set_xlabel(f"{x.metric} ({x.mode})")
        ax.set_ylabel(f"{y.metric} ({y.mode})")
        ax.legend(fontsize=8)
    fig.suptitle("every trial of each arm; ringed: on its arm's front over all objectives")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
