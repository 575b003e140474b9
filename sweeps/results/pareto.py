"""The Pareto front of a sweep's trials and its hypervolume, through moocore (the reference
implementations of non-dominated sorting and hypervolume by the authors of those algorithms).

Each trial is one point: the metrics of the report it is ranked by (its best report, whose
checkpoint export writes), so every model on the front can be exported. A point that violates a
constraint or lacks a finite value of an objective is never on the front."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sweeps.layout import trial_dirname
from sweeps.objectives import (Constraint, Goal, constraints_from_state, feasible,
                               goals_from_state, goals_to_state)

T = TypeVar("T")
HYPERVOLUME_METRIC = "sweep/hypervolume"  # on the sweep's MLflow parent run
REFERENCE_PARAM = "hypervolume_reference/"  # + the objective's metric: its reference coordinate


@dataclass(frozen=True)
class Front:
    """The non-dominated items (best of the first goal first) and the hypervolume they cover."""

    goals: tuple[Goal, ...]
    members: list[Any]
    hypervolume: float
    reference: tuple[float, ...]  # the point the hypervolume is measured from
    reference_declared: bool  # False: the worst value of each objective among the eligible points


def _coordinates(metrics: Mapping[str, Any], goals: Sequence[Goal]) -> list[float] | None:
    values = [metrics.get(goal.metric) for goal in goals]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def pareto_front(items: Sequence[T], metrics_of: Callable[[T], Mapping[str, Any]],
                 goals: Sequence[Goal], constraints: Sequence[Constraint] = ()) -> Front:
    """The front of ``items`` over ``goals``, among those meeting ``constraints``."""
    import moocore
    import numpy as np

    goals = tuple(goals)
    eligible = [(item, xy) for item in items
                if feasible(constraints, metrics_of(item))
                and (xy := _coordinates(metrics_of(item), goals)) is not None]
    maximise = [goal.mode == "max" for goal in goals]
    declared = all(goal.reference is not None for goal in goals)
    if not eligible:
        reference = tuple(goal.reference if goal.reference is not None else math.nan for goal in goals)
        return Front(goals, [], 0.0, reference, declared)
    points = np.array([xy for _, xy in eligible], dtype=float)
    worst = np.where(maximise, points.min(axis=0), points.max(axis=0))
    reference = tuple(float(goal.reference) if goal.reference is not None else float(w)
                      for goal, w in zip(goals, worst))
    mask = moocore.is_nondominated(points, maximise=maximise, keep_weakly=True)
    members = sorted((item for (item, _), keep in zip(eligible, mask) if keep),
                     key=lambda item: _order_key(metrics_of(item), goals[0]))
    volume = float(moocore.hypervolume(points, ref=np.array(reference), maximise=maximise))
    return Front(goals, members, volume, reference, declared)


def _order_key(metrics: Mapping[str, Any], goal: Goal) -> float:
    value = float(metrics[goal.metric])
    return value if goal.mode == "min" else -value


def sweep_front(state: Mapping[str, Any], trials: Sequence[Any]) -> Front:
    """The front of a sweep's non-failed trials (sweeps.results.records.TrialRecord, each at its
    best report) over the objectives and constraints its state records."""
    return pareto_front([t for t in trials if t.outcome != "failed"], lambda t: t.metrics,
                        goals_from_state(state), constraints_from_state(state))


def goal_pairs(goals: Sequence[Goal]) -> list[tuple[Goal, Goal]]:
    """Every pair of objectives (one 2-D front each when there are three or more)."""
    return [(a, b) for i, a in enumerate(goals) for b in goals[i + 1:]]


def describe_front(front: Front, name_of: Callable[[Any], str]) -> str:
    """``3 trials (a, b, c), hypervolume 12.5 from (24, 5.2, -10) (declared)``: one line."""
    if not front.members:
        return "empty: no trial has reported every objective (within the constraints, if any)"
    where = "declared" if front.reference_declared else "the worst values seen"
    reference = ", ".join(f"{value:.4g}" for value in front.reference)
    return (f"{len(front.members)} trials ({', '.join(name_of(m) for m in front.members)}), "
            f"hypervolume {front.hypervolume:.4g} from ({reference}) ({where})")


def front_summary(front: Front, id_of: Callable[[Any], str],
                  constraints: Sequence[Constraint] = ()) -> dict[str, Any]:
    """The front as JSON (trials by id; a reference coordinate no trial gives: null): what the
    sweep's summary, the report's summary.json and the MLflow parent run record of it."""
    return {"goals": goals_to_state(front.goals),
            "constraints": [c.words() for c in constraints],
            "trials": [id_of(member) for member in front.members],
            "hypervolume": front.hypervolume,
            "reference": [r if math.isfinite(r) else None for r in front.reference],
            "reference_declared": front.reference_declared,
            "line": describe_front(front, lambda member: trial_dirname(id_of(member)))}


def log_front(client: Any, run_id: str, front: dict[str, Any]) -> None:
    """The hypervolume as metric ``sweep/hypervolume`` and each reference coordinate as param
    ``hypervolume_reference/<metric>``; none without a feasible trial. MLflow never changes a
    param: a reference that moved since the last log (a resumed sweep found a worse value) is
    said on stderr, the new one is in the report's summary.json."""
    from mlflow.entities import Param

    if None in front["reference"]:
        return
    client.log_metric(run_id, HYPERVOLUME_METRIC, front["hypervolume"])
    wanted = {f"{REFERENCE_PARAM}{goal['metric']}": repr(float(coordinate))
              for goal, coordinate in zip(front["goals"], front["reference"])}
    logged = client.get_run(run_id).data.params
    moved = sorted(k for k, v in wanted.items() if k in logged and logged[k] != v)
    client.log_batch(run_id, params=[Param(k, v) for k, v in wanted.items() if k not in logged])
    if moved:
        print(f"note: MLflow params cannot change: {', '.join(moved)} keep their first values; "
              "the report's summary.json has this reference point", file=sys.stderr)
