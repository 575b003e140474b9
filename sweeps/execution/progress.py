"""What a person running a sweep reads: the live view in the sweep's own terms (a Ray Tune
``CLIReporter``: searcher and scheduler named, searched values as columns, n of M trials done with
an estimate, pruned shown as pruned, the best so far by the report's rule, the front of a
multi-objective sweep), the driver's quiet logs and the parent run's description. The end of a
sweep is sweeps/execution/summary.py's."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ray.tune import CLIReporter
from ray.tune.result import TRAINING_ITERATION
from tabulate import tabulate

from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, OBJECTIVE, OUTCOMES, SweepPaths, ranked,
                           trial_outcome, trial_value)
from sweeps.objectives import (INFEASIBLE_WORDS, Constraint, Goal, at_best_report, ranking_words,
                               shown_value)
from sweeps.execution.trial import rate_penalty_words
from vae.metric_table import METRICS, SAMPLED_SUFFIX

SAMPLERS = {"tpe": "TPE", "gp": "Gaussian process", "nsga2": "NSGA-II", "random": "random"}
LIVE_STATES = {"RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}
REPORT_EVERY_S = 30  # a table every 30 s (and at the end): readable in a log, not a flood
# Driver-side loggers whose INFO/WARNING lines tell a sweep's user nothing to act on.
QUIET_LOGGERS = {
    "ray._private.worker": logging.WARNING,  # "Started a local Ray instance."
    # "snapshotting triggered multiple times": each checkpoint (one per validation) forces one.
    "ray.tune.execution.experiment_state": logging.ERROR,
    "ray.tune.tune": logging.WARNING,  # "Wrote the latest version of ...", "Total run time: ..."
}


@dataclass(frozen=True)
class SweepView:
    """What the live view and the summary say about a sweep, taken from its search space."""

    name: str
    description: str
    searcher: str  # e.g. "Optuna TPE (seed 0; the first 4 trials random)"
    scheduler: str  # e.g. "ASHA on training_iteration: max_t 6, grace 1, reduction factor 2"
    objective: str  # the metric name the objective is
    mode: str
    rate_budget: str  # "" or "+ 10 per kbps of val/kl_kbps over 1.2": a penalty in the objective
    time_attr: str
    max_t: int
    total: int
    params: tuple[str, ...]
    goals: tuple[Goal, ...] = ()  # several: a multi-objective sweep
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def of(cls, space: Any, name: str | None = None) -> SweepView:
        spec = space.spec
        searcher = f"Optuna {SAMPLERS[spec.searcher.sampler]} (seed {spec.searcher.seed}"
        if spec.searcher.sampler in ("tpe", "gp"):
            searcher += f"; the first {spec.searcher.startup_trials} trials random"
        elif spec.searcher.sampler == "nsga2":
            searcher += f"; generations of {spec.searcher.startup_trials} trials, the first random"
        if spec.scheduler.type == "asha":
            sched = spec.scheduler
            scheduler = (f"ASHA on {sched.time_attr}: max_t {space.max_t}, grace "
                         f"{sched.grace_period}, reduction factor {sched.reduction_factor:g}")
        else:
            scheduler = f"none: every trial runs to {space.max_t} {spec.scheduler.time_attr}"
        budget = spec.rate_budget
        penalty = rate_penalty_words(budget.max_kbps, budget.penalty_per_kbps) if budget else ""
        return cls(name or space.name, spec.description, searcher + ")", scheduler,
                   spec.objective.metric, spec.objective.mode, penalty, spec.scheduler.time_attr,
                   space.max_t, spec.num_samples, tuple(spec.params), tuple(space.goals),
                   tuple(space.constraints))

    @property
    def ranked_by(self) -> str:
        """What the objective value is: the metric, with its rate penalty or constraints."""
        if self.rate_budget:
            return f"objective ({self.objective} {self.rate_budget})"
        if self.constraints:
            return f"objective ({ranking_words(Goal(self.objective, self.mode), self.constraints)})"
        return self.objective

    @property
    def multi_objective(self) -> bool:
        return len(self.goals) > 1

    def objectives_line(self) -> str:
        """``objectives: val/kl_kbps (min), ...; ASHA ranks by the primary ...`` (several only)."""
        listed = ", ".join(f"{goal.metric} ({goal.mode})" for goal in self.goals)
        line = (f"objectives (Optuna is told each; the front is over them): {listed}; ASHA and "
                f"the best trial go by the primary, {self.objective}")
        return line + (f" ({INFEASIBLE_WORDS})" if self.constraints else "")

    def beside_objective(self) -> tuple[str, ...]:
        """Result keys a person reads beside the ranked metric, at the same report: the waveform's
        fidelity (SI-SDR of the same decoding: a mel distance alone cannot tell a reconstruction
        from noise with the right envelope) and the rate."""
        decoding = SAMPLED_SUFFIX if self.objective.endswith(SAMPLED_SUFFIX) else ""
        keys = (METRICS["si_sdr" + decoding].key, METRICS["kl_kbps"].key)
        return tuple(key for key in keys if key != self.objective)

    def metric_columns(self) -> dict[str, str]:
        """Result key -> column label: the objective under its own name, and with a rate budget
        or constraints the metrics it is made of, each under theirs."""
        columns = {TRAINING_ITERATION: "iter", "step": "step"}
        if self.rate_budget or self.constraints:  # the scalar is not the metric: show both
            parts = [self.objective, *(c.metric for c in self.constraints)]
            columns |= {key: key.split("/")[-1] for key in parts}
            if self.rate_budget:
                columns[METRICS["kl_kbps"].key] = "kbps"
            columns |= {OBJECTIVE: "objective", BEST_OBJECTIVE: "best objective"}
        else:
            columns |= {OBJECTIVE: self.objective.split("/")[-1], BEST_OBJECTIVE: "best"}
        return columns


def trial_state(trial: Any, view: SweepView) -> str:
    """running / pending / paused, or for an ended trial its outcome (layout.trial_outcome)."""
    if trial.status in LIVE_STATES:
        return LIVE_STATES[trial.status]
    progress = int((trial.last_result or {}).get(view.time_attr, 0) or 0)
    return trial_outcome(trial.status == "ERROR", progress, view.max_t)


def short_name(param: str) -> str:
    """``loss.kl.weight`` -> ``kl.weight``: the last two parts name it in a narrow column."""
    return ".".join(param.split(".")[-2:])


def ranked_cell(key: str, value: Any) -> Any:
    """A ranked scalar as text: ``3.544``, or outside the constraints its violation, not
    INFEASIBLE_OFFSET + it. Text throughout the column: tabulate formats no float in a column
    that holds text."""
    if key in (OBJECTIVE, BEST_OBJECTIVE) and isinstance(value, float):
        return shown_value(value, outside="outside by")
    return value


def trial_rows(trials: list[Any], view: SweepView, parameter_columns: dict[str, str],
               metric_columns: dict[str, str]) -> list[dict[str, Any]]:
    """One row per trial, best first: trial, state, searched values, then the metric columns."""
    order = ranked(trials, view.mode,
                   lambda t: None if t.status == "ERROR" else trial_value(t.last_result))
    rows = []
    for trial in order:
        result = trial.last_result or {}
        row: dict[str, Any] = {"trial": str(trial), "state": trial_state(trial, view)}
        row.update({label: trial.config.get(param) for param, label in parameter_columns.items()})
        row.update({label: ranked_cell(key, result.get(key)) for key, label in metric_columns.items()})
        rows.append(row)
    return rows


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(states: Counter, total: int, elapsed: float) -> str:
    """``3 of 8 trials done (1 completed, 2 pruned, 0 failed) · 2 running · 3 pending · ...``"""
    done = sum(states[o] for o in OUTCOMES)
    outcomes = ", ".join(f"{states[o]} {o}" for o in OUTCOMES)
    waiting = max(0, total - done - states["running"] - states["paused"])
    line = (f"{done} of {total} trials done ({outcomes}) · {states['running']} running · "
            f"{waiting} pending · elapsed {duration(elapsed)}")
    if 0 < done < total:  # the finished trials' pace, at this concurrency
        line += f" · about {duration(elapsed / done * (total - done))} left"
    return line


def best_line(trials: list[Any], view: SweepView) -> str | None:
    """The best trial so far by the report's rule, with its value, step and searched values."""
    candidates = [t for t in trials if t.status != "ERROR" and trial_value(t.last_result) is not None]
    if not candidates:
        return None
    best = ranked(candidates, view.mode, lambda t: trial_value(t.last_result))[0]
    result = best.last_result
    values = ", ".join(f"{short_name(p)}={best.config.get(p):.3g}" if isinstance(
        best.config.get(p), float) else f"{short_name(p)}={best.config.get(p)}" for p in view.params)
    return (f"best so far: {best} {view.ranked_by} {shown_value(trial_value(result))} at step "
            f"{result.get(BEST_STEP)} ({values})")


def front_line(trials: list[Any], view: SweepView) -> str | None:
    """The front so far over the objectives and its hypervolume (a multi-objective sweep)."""
    from sweeps.results.pareto import describe_front, pareto_front

    if not view.multi_objective:
        return None
    reported = [t for t in trials if t.status != "ERROR" and t.last_result]
    front = pareto_front(reported, lambda t: at_best_report(t.last_result), view.goals,
                         view.constraints)
    return "front so far: " + describe_front(front, str)


class SweepReporter(CLIReporter):
    """Ray Tune's command-line reporter, speaking the sweep's language (see the module doc)."""

    def __init__(self, view: SweepView, max_report_frequency: int = REPORT_EVERY_S) -> None:
        super().__init__(
            parameter_columns={p: short_name(p) for p in view.params},
            metric_columns=view.metric_columns(),
            total_samples=view.total, max_report_frequency=max_report_frequency)
        self.view = view

    def _progress_str(self, trials: list[Any], done: bool, *sys_info: str, fmt: str = "psql",
                      delim: str = "\n") -> str:
        view = self.view
        states = Counter(trial_state(t, view) for t in trials)
        lines = [f"== sweep {view.name}: {view.ranked_by} ({view.mode}) ==",
                 f"searcher: {view.searcher} · scheduler: {view.scheduler}",
                 progress_line(states, self._total_samples or view.total,
                               time.time() - (self._start_time or time.time()))]
        lines += [s for s in sys_info if "resource usage" in s]  # Ray's CPU/GPU line
        if view.multi_objective:
            lines.append(view.objectives_line())
        lines += [line for line in (best_line(trials, view), front_line(trials, view)) if line]
        rows = trial_rows(trials, view, self._parameter_columns, self._metric_columns)
        shown = rows if done else rows[:self._max_progress_rows]
        lines.append(tabulate(shown, headers="keys", tablefmt=fmt, floatfmt=".4g",
                              missingval=""))
        if len(shown) < len(rows):
            lines.append(f"... and {len(rows) - len(shown)} more trials")
        return delim.join(lines) + delim


def use_reporter_output() -> None:
    """Ray's newer output engine ignores a RunConfig ``progress_reporter`` (it warns and prints
    its own table), so the sweep's driver uses the engine that honours it."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def quiet_driver_logs(local_ray: bool) -> None:
    """Silence, at their loggers, the driver's lines nobody can act on (see QUIET_LOGGERS)."""
    import optuna

    from vae.training.mlflow import quiet_store_setup

    quiet_store_setup()  # the checks before the sweep may be the first to open the store
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..."
    if local_ray:  # Ray warns that it turned on token auth, its default for a local Ray
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR)
    use_reporter_output()


def describe_space(space: Any) -> str:
    """The parent run's description (Markdown): what the sweep searches and how."""
    view = SweepView.of(space)
    rows = [[f"`{name}`", f"{param.type}: " + ", ".join(
        f"{k}={v}" for k, v in param.model_dump(exclude_defaults=True, exclude={"type"}).items())]
        for name, param in space.spec.params.items()]
    return "\n\n".join([
        f"**{view.name}**: {view.description or 'no description in the space file'}",
        (view.objectives_line() + ". " if view.multi_objective else "") +
        f"Objective `{view.objective}`{' ' + view.rate_budget if view.rate_budget else ''} "
        f"({view.mode}), each trial ranked by its best report"
        + (f" ({view.ranked_by}; {INFEASIBLE_WORDS})" if view.constraints else "") +
        f". {view.total} trials, {space.spec.max_concurrent_trials} at a time.",
        f"Searcher: {view.searcher}. Scheduler: {view.scheduler}.",
        tabulate(rows, headers=["parameter", "distribution"], tablefmt="github")])


def sweep_reporter(space: Any, paths: SweepPaths) -> SweepReporter:
    """The live view for Tune's RunConfig; also writes the space's description on the parent run
    (its id is in the sweep's state by the time the Tuner is built)."""
    from sweeps.layout import load_state
    from sweeps.execution.tracking import client_for, describe_run

    use_reporter_output()
    state = load_state(paths.state_dir)
    try:  # a description is not worth stopping the sweep for (the store may be unreachable)
        describe_run(client_for(state["tracking_uri"]), state["parent_run_id"],
                     describe_space(space))
    except Exception as exc:
        logging.getLogger(__name__).warning("MLflow: the sweep's description not recorded (%s)",
                                            str(exc).splitlines()[0][:200] if str(exc) else exc)
    return SweepReporter(SweepView.of(space, paths.name))
