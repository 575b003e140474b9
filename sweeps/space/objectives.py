"""The keys of a search space that say what a sweep optimises: ``objective`` (one metric) or
``objectives`` (several, with the ``primary`` one ASHA ranks by), and ``constraints``; their
checks against the metric table. What they mean at run time is sweeps/objectives.py's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sweeps.objectives import RATE_METRIC
from vae.metric_table import METRICS

# Weight-independent validation metrics (the one metric table) and the direction that is better.
OBJECTIVE_METRICS = {metric.key: metric.direction for metric in METRICS.values()}


class StrictSection(BaseModel):
    # inf/nan pass ``gt``/``ge`` bounds (an infinite reduction factor, cpu: .inf): refuse them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Objective(StrictSection):
    metric: str = "val/mel_distance"
    mode: Literal["min", "max"] = "min"


class ListedObjective(Objective):
    """One of several objectives; ``reference`` is its coordinate of the hypervolume's reference
    point (default: the worst value the sweep's feasible trials reached)."""

    reference: float | None = None


class ConstraintSpec(StrictSection):
    """``min <= metric <= max`` at the report that ranks a trial (one bound or both)."""

    metric: str
    min: float | None = None
    max: float | None = None


def _metric_problem(key: str, metric: str) -> str | None:
    if metric in OBJECTIVE_METRICS:
        return None
    hint = " (training losses depend on the searched weights and cannot rank trials)" \
        if metric.startswith("train/") else ""
    return (f"{key}: {metric!r} is not a weight-independent validation metric{hint}; expected one "
            f"of {sorted(OBJECTIVE_METRICS)}")


def check_objectives(spec: Any, problems: list[str]) -> None:
    """One objective or several (then ``primary`` names the one ASHA ranks by), each a metric of
    the table with its own direction; constraints on metrics of the table. Leaves
    ``spec.objective`` the primary objective, which every single-objective reader uses."""
    if spec.objective is not None and spec.objectives is not None:
        problems.append("objective, objectives: give one, `objective` for one metric or "
                        "`objectives` (a list) for several, not both")
    if spec.objectives is None:
        if spec.primary is not None:
            problems.append("primary: only for a space with several `objectives`")
        spec.objective = spec.objective or Objective()
        listed = [("objective", spec.objective)]
    else:
        listed = [(f"objectives[{i}]", o) for i, o in enumerate(spec.objectives)]
        names = [o.metric for o in spec.objectives]
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append(f"objectives[{i}].metric: {name} is listed twice")
        primary = spec.primary or names[0]
        if primary not in names:
            problems.append(f"primary: {primary!r} is not one of the objectives ({', '.join(names)})")
            primary = names[0]
        spec.objective = Objective(metric=primary, mode=spec.objectives[names.index(primary)].mode)
        if spec.rate_budget is not None:
            problems.append("rate_budget: a space with several objectives bounds the rate with a "
                            f"constraint instead ({{metric: {RATE_METRIC}, max: KBPS}}) or makes it "
                            "an objective")
    for key, objective in listed:
        if (why := _metric_problem(f"{key}.metric", objective.metric)) is not None:
            problems.append(why)
        elif OBJECTIVE_METRICS[objective.metric] != objective.mode:
            problems.append(f"{key}.mode: {objective.metric} is better when "
                            f"{OBJECTIVE_METRICS[objective.metric]}imised, got mode {objective.mode!r}")
    if spec.rate_budget is not None and spec.objective.mode != "min":
        problems.append("rate_budget: needs an objective that is minimised (a distortion)")
    for i, constraint in enumerate(spec.constraints):
        key = f"constraints[{i}]"
        if (why := _metric_problem(f"{key}.metric", constraint.metric)) is not None:
            problems.append(why)
        if constraint.min is None and constraint.max is None:
            problems.append(f"{key}: expected a bound, `min` or `max` (or both)")
        elif constraint.min is not None and constraint.max is not None and constraint.min > constraint.max:
            problems.append(f"{key}: min {constraint.min:g} exceeds max {constraint.max:g}")
