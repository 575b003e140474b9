"""Compare the trials of a sweep: ``sweep-report SWEEP [--storage-path P] [-o DIR]``

Writes ``trials.csv`` (best first by each trial's best objective, with the step it was reached
at, the metrics of that report, the outcome and the searched values), ``trials.md`` (outcome
counts, compute spent vs running every trial to max_t, how many trials each analysis used and
which, the Pareto front, parameter importance, then the table), ``summary.json`` (the same
numbers), ``front.csv`` (the trials on the front over every objective: for a single-objective
sweep the rate and its objective; with their hypervolume and its reference point in trials.md),
``rate_distortion.png`` (every trial at its best report, the best starred, the Pareto front of
the rate and the sampled mel distance, or a multi-objective sweep's primary objective, and its
ids), ``front_<a>_vs_<b>.png`` (with three objectives or more: the front of each pair),
``pareto_optuna.png`` (Optuna's Pareto-front plot of a multi-objective study), with
``--anchors opus:6,mp3:32`` ``anchors.csv`` (reference codecs on the trials' validation split,
drawn on the rate–distortion plots: sweeps/results/anchors.py),
``learning_curves.png`` (every trial's objective by step, pruned dashed), ``slice.png`` (each
trial's best objective against each searched value), Optuna's ``parallel_coordinate.png`` of the
completed trials and ``importance.png`` (fANOVA, from enough completed trials only). Each
figure's title says how many trials it shows; trials violating a constraint are drawn hollow."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.results import plots
from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, OBJECTIVE, OUTCOMES, LayoutError, SweepPaths,
                           add_storage_argument, load_state, objective_mode, ranked, trial_outcome,
                           trial_value)
from sweeps.objectives import (INFEASIBLE_WORDS, RATE_METRIC, Goal, constraints_from_state,
                               goals_from_state, ranking_words)
from sweeps.results.promotion import promotion_lines
from sweeps.results.records import best_result
from sweeps.results.anchors import (ANCHORS_CSV, add_anchors_argument, anchors_markdown,
                                    checked_anchors, score_anchors, sweep_config)
from sweeps.results.front import (FRONT_CSV, OPTUNA_PARETO_FILE, front_markdown, front_summary,
                                  front_table, pareto_front, plot_optuna_pareto, plot_pair_fronts,
                                  plot_rate_distortion, table_front, violating)
from vae.cli import common
from vae.metric_table import METRICS as METRIC_TABLE

# The report's metric columns (at each trial's best report): the objective, then the table's.
METRICS = [OBJECTIVE, *(metric.key for metric in METRIC_TABLE.values())]
STATE_KEYS = ("time_attr", "max_t", "study_name")
# The KL is a rate only for a decoder given a posterior sample: pair it with the sampled distortion.
RATE, DISTORTION = RATE_METRIC, METRIC_TABLE["mel_distance_sampled"].key


def trial_table(experiment_dir: str, state: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per trial (best first by its best objective) and each trial's reported history."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_dir)
    histories = analysis.trial_dataframes
    mode = objective_mode(state)
    rows = [trial_row(trial, histories.get(trial.trial_id), state) for trial in analysis.trials]
    rows = ranked(rows, mode, lambda row: None if row["outcome"] == "failed" else row[BEST_OBJECTIVE])
    table = pd.DataFrame(rows)
    return table, {t.trial_id: histories.get(t.trial_id, pd.DataFrame()) for t in analysis.trials}


def trial_row(trial: Any, history: pd.DataFrame | None, state: dict[str, Any]) -> dict[str, Any]:
    """The trial's outcome, best objective and its step, progress, the metrics of its best report
    (the one its exported checkpoint was saved with) and its searched values."""
    last = trial.last_result or {}
    progress = int(last.get(state["time_attr"], 0) or 0)
    outcome = trial_outcome(trial.status == "ERROR", progress, state["max_t"]) \
        if trial.status in ("ERROR", "TERMINATED") else trial.status.lower()
    records = history.to_dict("records") if history is not None and not history.empty else [last]
    best = best_result(records)
    row = {"trial_id": trial.trial_id, "outcome": outcome, BEST_OBJECTIVE: trial_value(last),
           BEST_STEP: best.get("step"),
           "iterations": int(last.get("training_iteration", 0) or 0),
           "step": int(last.get("step", 0) or 0)}
    row.update({m: best.get(m) for m in METRICS})
    row.update({f"param:{k}": v for k, v in (trial.config or {}).items()})
    return row


def rate_distortion_goals(state: dict[str, Any], goals: list[Goal]) -> tuple[Goal, Goal]:
    """rate_distortion.png's axes: the rate, then a multi-objective sweep's primary objective,
    else the distortion of a decoder given a posterior sample (what the rate pays for)."""
    primary = next((goal for goal in goals if goal.metric == state.get("objective")), None)
    if state.get("objectives") and primary is not None and primary.metric != RATE:
        return Goal(RATE, "min"), primary
    return Goal(RATE, "min"), Goal(DISTORTION, "min")


def compute_spent(table: pd.DataFrame, state: dict[str, Any]) -> dict[str, float]:
    """Work done in the scheduler's time unit, against running every trial to max_t."""
    column = "iterations" if state["time_attr"] == "training_iteration" else "step"
    spent = float(table[column].sum())
    full = float(len(table) * state["max_t"])
    return {"spent": spent, "all_to_max_t": full, "fraction": spent / full if full else 0.0,
            "unit": state["time_attr"]}


# Below this many completed trials, parameter importance is noise: the report leaves it out.
# Measured with fANOVA as used here on a noisy objective of 3 or 6 uniform parameters (one
# dominant, one minor), 20 seeds each: at 10 trials it ranks the dominant one first but the minor
# one second in only 2-10 of 20 runs; at 30, in 13-18 of 20.
IMPORTANCE_MIN_TRIALS = 30


def importance(study: Any, primary: str | None = None) -> tuple[dict[str, float], plots.Analysis]:
    """Each searched parameter's importance from the study's completed trials (fANOVA: named, so
    an Optuna upgrade cannot swap the evaluator; seeded, so a rerun gives the same numbers), and
    what it used; none below IMPORTANCE_MIN_TRIALS, the analysis's note saying why. For a study
    of several objectives, the importance for the ``primary`` one."""
    import optuna

    analysis = plots.completed_analysis(study, "Parameter importance (fANOVA)")
    if analysis.trials < IMPORTANCE_MIN_TRIALS:
        return {}, replace(analysis, note=f"not estimated: {analysis.trials} completed trials, "
                           f"fewer than the {IMPORTANCE_MIN_TRIALS} it needs (from fewer, the "
                           "ranking is noise)")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    names = study.metric_names or []
    target = None
    if len(study.directions) > 1 and primary in names:
        index = names.index(primary)
        target = lambda trial: trial.values[index]  # noqa: E731
    try:
        values = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except (RuntimeError, ValueError) as exc:  # e.g. a param that never varied
        return {}, replace(analysis, note=f"not estimated: Optuna: {exc}")
    return {name: float(value) for name, value in values.items()}, analysis


def build_report(paths: SweepPaths, out_dir: Path, anchors: Sequence[Any] = ()) -> dict[str, Any]:
    """Write the report files for the sweep at ``paths``, with ``anchors`` (reference codecs)
    scored on its validation split."""
    import optuna

    state = load_state(paths.state_dir, required=STATE_KEYS)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, histories = trial_table(paths.experiment_dir, state)
    table.to_csv(out_dir / "trials.csv", index=False)
    study = optuna.load_study(study_name=state["study_name"], storage=paths.optuna_url)
    objective_name = state.get("objective", OBJECTIVE)
    importances, importance_analysis = importance(study, objective_name)
    goals, constraints = goals_from_state(state), constraints_from_state(state)
    rate, distortion = rate_distortion_goals(state, goals)
    front = table_front(table, goals, constraints)
    front_rows = front_table(table, front, constraints)
    front_rows.to_csv(out_dir / FRONT_CSV, index=False)
    references = score_anchors(sweep_config(paths, state), anchors, out_dir) if anchors else None
    analyses = {  # each draws its figure (when it has trials to) and says what it used
        "rate_distortion": plot_rate_distortion(
            table, pareto_front(table, rate, distortion, constraints=constraints), rate.metric,
            distortion.metric, out_dir / "rate_distortion.png", modes=(rate.mode, distortion.mode),
            infeasible=violating(table, constraints), references=references),
        "learning_curves": plots.plot_learning_curves(table, histories, objective_name,
                                                      out_dir / "learning_curves.png"),
        "slice": plots.plot_slice(table, plots.param_scales(study), objective_name,
                                  out_dir / "slice.png"),
        "parallel_coordinate": plots.plot_parallel_coordinate(study, objective_name,
                                                              out_dir / "parallel_coordinate.png"),
        "importance": plots.plot_importance(importances, importance_analysis,
                                            out_dir / "importance.png"),
        **plot_pair_fronts(table, goals, constraints, out_dir, references),
        "pareto_optuna": plot_optuna_pareto(study, goals, out_dir / OPTUNA_PARETO_FILE),
    }
    summary = {
        "sweep": paths.name,
        "objective": objective_name,
        "ranking": ranking_words(goal_of(goals, objective_name, state), constraints)
        if state.get("objectives") or constraints else None,  # else the objective says it
        "trials": int(len(table)),
        "outcomes": plots.outcome_counts(table),
        "compute": compute_spent(table, state),
        "analyses": {key: analysis.as_dict() for key, analysis in analyses.items()},
        "importance": importances,
        "front": front_summary(table, front, constraints),
        "anchors": references.to_dict("records") if references is not None else [],
        "best": table.iloc[0].dropna().to_dict() if len(table) else None,
        "promotion": promotion_lines(paths, state),  # its top trials trained longer (sweep-promote)
        "plots": [analysis.file for analysis in analyses.values() if analysis.file],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out_dir / "trials.md").write_text(trials_markdown(table, summary, analyses, front_rows,
                                                       references))
    return summary


def goal_of(goals: list[Goal], metric: str, state: dict[str, Any]) -> Goal:
    """The sweep's objective ``metric`` as a goal (its mode from the state when it is no goal)."""
    return next((g for g in goals if g.metric == metric), Goal(metric, objective_mode(state)))


def trials_markdown(table: pd.DataFrame, summary: dict[str, Any],
                    analyses: dict[str, plots.Analysis], front_rows: pd.DataFrame,
                    references: pd.DataFrame | None = None) -> str:
    """trials.md: what the sweep spent and found, how many trials each analysis used and which,
    its Pareto front, the reference codecs, then the table (best first)."""
    counts, compute = summary["outcomes"], summary["compute"]
    outcomes = ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)
    lines = [f"# Sweep {summary['sweep']}", "",
             f"{summary['trials']} trials: {outcomes} (pruned: stopped early by ASHA).", "",
             f"Compute: {compute['spent']:g} of {compute['all_to_max_t']:g} {compute['unit']} "
             f"({compute['fraction']:.0%} of running every trial to max_t).", "",
             f"Objective: `{summary['objective']}`, each trial ranked by its best report.", "",
             *(part for line in summary.get("promotion") or [] for part in (line + ".", "")),
             *([f"Ranked (by ASHA, for the best trial and the table) by {summary['ranking']}"
                + (f"; {INFEASIBLE_WORDS}." if summary["front"]["constraints"] else "."), ""]
               if summary["ranking"] else []),
             "## What each analysis used", "",
             *(analysis_line(analysis, summary["trials"]) for analysis in analyses.values()), "",
             *front_markdown(summary["front"], front_rows),
             *anchors_markdown(references),
             "## Parameter importance", ""]
    found = analyses["importance"]
    if summary["importance"]:
        lines += [f"From {found.count()}: {found.uses}.", "",
                  pd.DataFrame(summary["importance"].items(), columns=["parameter", "importance"])
                  .to_markdown(index=False, floatfmt=".3f")]
    else:
        lines.append(found.note[:1].upper() + found.note[1:] + ".")
    lines += ["", "## Trials, best first", "", table.to_markdown(index=False, floatfmt=".4g"), "",
              "Plots: " + ", ".join(summary["plots"]), ""]
    return "\n".join(lines)


def analysis_line(analysis: plots.Analysis, total: int) -> str:
    """One analysis in words: its figure, how many of the sweep's trials it used and which."""
    figure = f"`{analysis.file}`" if analysis.file else "no figure"
    used = f"{analysis.trials} of the {total} trials"
    if analysis.trials:
        used += f" ({analysis.breakdown()})"
    note = f"; {analysis.note}" if analysis.note else ""
    return f"- {analysis.name}, {figure}: {used}, {analysis.uses}{note}."


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-report", __doc__)
    parser.add_argument("sweep", help="sweep name (as given to sweep-run)")
    add_storage_argument(parser, "where the sweep's results are")
    common.add_out(parser, "report folder (default: beside the sweep state)", required=False)
    add_anchors_argument(parser)
    parser.add_argument("--log-to-mlflow", action="store_true",
                        help="also log the report to the sweep's parent MLflow run")
    return parser


@common.exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    anchors = checked_anchors(args.anchors)
    try:
        paths = SweepPaths.resolve(args.storage_path, args.sweep)
        out = Path(args.out) if args.out else paths.report_dir
        problem = common.writable_problem("-o" if args.out else "report folder", out)
        if problem:
            return common.fail(problem)
        summary = build_report(paths, out, anchors)
        if args.log_to_mlflow:
            log_to_parent_run(paths, out, summary["front"])
    except LayoutError as exc:
        return common.fail(str(exc))
    print((out / "trials.md").read_text())  # counts, compute and importance come first
    print(f"report written to {out}: trials.md, trials.csv, summary.json, {FRONT_CSV}, "
          + (f"{ANCHORS_CSV}, " if anchors else "") + ", ".join(summary["plots"]))
    return 0


def log_to_parent_run(paths: SweepPaths, out: Path, front: dict[str, Any]) -> None:
    """The report's files, and the front's hypervolume with its reference point."""
    from sweeps.results.pareto import log_front
    from sweeps.execution.tracking import client_for

    state = load_state(paths.state_dir, required=("tracking_uri", "parent_run_id"))
    client = client_for(state["tracking_uri"])
    client.log_artifacts(state["parent_run_id"], str(out), "report")
    log_front(client, state["parent_run_id"], front)


if __name__ == "__main__":
    common.run(main)
