"""The rules between params of a search space: conditions (which earlier categorical value a
param depends on), starting points (``points_to_evaluate``), who sets a trial's process count,
and NSGA-II's population against the trial count. Apart from space.py, which parses the file and
checks each param against the config schema."""

from __future__ import annotations

from typing import Any

from sweeps.space.distributions import CategoricalParam, ParamKind


def condition_problems(name: str, param: ParamKind, params: dict[str, ParamKind]) -> list[str]:
    """Problems with ``params.NAME.condition``: each must name an earlier categorical param
    (not NAME itself) and one of its choices."""
    problems: list[str] = []
    order = list(params)
    for cond_key, cond_value in (param.condition or {}).items():
        where = f"params.{name}.condition.{cond_key}"
        parent = params.get(cond_key)
        if cond_key == name:
            problems.append(f"{where}: a param cannot be conditioned on itself")
        elif parent is None:
            problems.append(f"{where}: conditions must name a searched categorical param "
                            f"(known: {', '.join(order)})")
        elif not isinstance(parent, CategoricalParam):
            problems.append(f"{where}: conditions must name a categorical param")
        elif order.index(cond_key) > order.index(name):
            problems.append(f"{where}: must be declared before {name} (params are sampled in order)")
        elif cond_value not in parent.choices:
            problems.append(f"{where}: {cond_value!r} is not one of its choices {parent.choices}")
    return problems


def point_problems(points: list[dict[str, Any]], params: dict[str, ParamKind]) -> list[str]:
    """Problems with ``points_to_evaluate``: unknown params, values outside their range, and
    values of params whose condition the point does not satisfy."""
    problems: list[str] = []
    for i, point in enumerate(points):
        for name, value in point.items():
            key = f"points_to_evaluate[{i}].{name}"
            param = params.get(name)
            if param is None:
                problems.append(f"{key}: not a searched param (known: {', '.join(params)})")
            elif (why := param.point_problem(value)) is not None:
                problems.append(f"{key}: {why}")
            elif (why := _condition_false(param, point)) is not None:
                problems.append(f"{key}: {why}")
    return problems


def _condition_false(param: ParamKind, point: dict[str, Any]) -> str | None:
    """Why a starting point cannot set ``param``: its condition does not hold in the point, so
    the value would never be sampled (Optuna would drop it or record a value without effect)."""
    for cond_key, cond_value in (param.condition or {}).items():
        if cond_key not in point:
            return f"only sampled when {cond_key} = {cond_value!r}; the point must set {cond_key}"
        if point[cond_key] != cond_value:
            return (f"only sampled when {cond_key} = {cond_value!r}, but the point sets "
                    f"{cond_key} = {point[cond_key]!r}")
    return None


# A trial's processes are its Ray Train workers; Lightning launching its own inside a Tune
# trial would escape Ray's placement.
PROCESS_KEYS = ("trainer.devices", "trainer.num_nodes")


def process_problems(spec: Any) -> list[str]:
    """A space that sets a trial's process count through the trainer instead of its resources."""
    problems = []
    for key in PROCESS_KEYS:
        where = ("base.overrides" if spec.base.overrides.get(key, 1) != 1 else
                 "params" if key in spec.params else None)
        if where:
            problems.append(f"{where}.{key}: a trial's data-parallel processes are set by "
                            "resources.workers (Ray Train workers), not by the trainer")
    return problems


def searcher_problems(spec: Any) -> list[str]:
    """NSGA-II breeds generations of ``searcher.startup_trials`` trials (its population; the
    first is random): fewer than two generations' worth of trials is a random search."""
    population, trials = spec.searcher.startup_trials, spec.num_samples
    if spec.searcher.sampler != "nsga2":
        return []
    if population < 2:
        return [f"searcher.startup_trials: NSGA-II's population (each generation's trials) must "
                f"be at least 2, got {population}"]
    if trials < 2 * population:
        return [f"searcher.startup_trials: {population} is NSGA-II's population, so {trials} "
                f"trials (num_samples) never breed a second generation; use at most {trials // 2}"]
    return []
