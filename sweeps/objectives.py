"""What a sweep optimises, as plain data: its objectives (metric, direction, hypervolume reference),
its constraints, and the one scalar ASHA, Tune's checkpoint keeper and every ranking compare.

A multi-objective sweep still needs one number per report for ASHA: its **primary** objective
among reports that meet every constraint, Deb's feasibility rule folded into a scalar. A report
that violates a constraint ranks below every report that meets them all (its value is pushed
``INFEASIBLE_OFFSET`` past any real metric, on the bad side), and among violating reports the
smaller total violation ranks first, so early in training ASHA keeps the trials closest to
feasible. Optuna sees the real objectives and constraints (sweeps/execution/search.py).

No numpy, no Ray: the search space, the trial and the readers of a sweep's state import it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vae.metric_table import BEST_PREFIX, METRICS, VALIDATION_PREFIX, Direction, best_metric

RATE_METRIC = METRICS["kl_kbps"].key
# Each Tune result carries the trial's best report so far under these names (best/val/...).
BEST_VALIDATION = best_metric(VALIDATION_PREFIX)
# Farther than any metric's real value (kbps, dB and mel distances are far below it), so that
# every report violating a constraint ranks behind every feasible one.
INFEASIBLE_OFFSET = 1.0e6


@dataclass(frozen=True)
class Goal:
    """One objective: a validation metric, its better direction and, optionally, the reference
    point's coordinate for the hypervolume (else the worst value the sweep saw)."""

    metric: str
    mode: Direction
    reference: float | None = None


@dataclass(frozen=True)
class Constraint:
    """``low <= metric <= high`` (either bound may be absent) at the report that ranks a trial."""

    metric: str
    low: float | None = None
    high: float | None = None

    def excess(self, metrics: Mapping[str, Any]) -> float:
        """How far the report is outside the bounds: <= 0 when it meets them (Optuna's
        convention for constraint values); +inf when the metric is missing or not finite."""
        value = metrics.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return math.inf
        below = self.low - value if self.low is not None else -math.inf
        above = value - self.high if self.high is not None else -math.inf
        return max(below, above)

    def words(self) -> str:
        """``val/si_sdr_sampled >= 0``, ``2 <= val/kl_kbps <= 12``."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} <= {self.metric} <= {self.high:g}"
        if self.low is not None:
            return f"{self.metric} >= {self.low:g}"
        return f"{self.metric} <= {self.high:g}"


def at_best_report(result: Mapping[str, Any]) -> dict[str, float]:
    """The validation metrics of the trial's best report so far, from one of its Tune results."""
    return {key.removeprefix(BEST_PREFIX): value
            for key, value in result.items() if key.startswith(BEST_VALIDATION)}


def total_violation(constraints: Iterable[Constraint], metrics: Mapping[str, Any]) -> float:
    """The sum of every constraint's positive excess (0 when the report meets them all)."""
    return sum(max(0.0, c.excess(metrics)) for c in constraints)


def feasible(constraints: Iterable[Constraint], metrics: Mapping[str, Any]) -> bool:
    return total_violation(constraints, metrics) == 0


def ranked_value(primary: float, mode: Direction, violation: float) -> float:
    """The scalar ASHA compares: ``primary`` when the report meets the constraints, else
    ``INFEASIBLE_OFFSET + violation`` on the bad side of the mode (see the module docstring)."""
    if violation <= 0:
        return primary
    if not math.isfinite(violation):
        return math.inf if mode == "min" else -math.inf
    return INFEASIBLE_OFFSET + violation if mode == "min" else -(INFEASIBLE_OFFSET + violation)


def violation_in(value: float) -> float | None:
    """The total violation a ranked value carries (None for a report inside the constraints)."""
    if math.isfinite(value) and abs(value) >= INFEASIBLE_OFFSET:
        return abs(value) - INFEASIBLE_OFFSET
    return None


def shown_value(value: float, outside: str = "outside the constraints by") -> str:
    """A ranked value as a person reads it: ``3.531``, or ``outside the constraints by 2.5``
    (a table column, whose header says what is ranked, passes a shorter ``outside``)."""
    violation = violation_in(value)
    return f"{value:.4g}" if violation is None else f"{outside} {violation:.4g}"


def ranking_words(primary: Goal, constraints: Iterable[Constraint]) -> str:
    """What reports are ranked by, for the live view, the summary and the runs' formula tag:
    ``val/mel_distance_sampled where val/si_sdr_sampled >= 0``."""
    met = " and ".join(c.words() for c in constraints)
    return f"{primary.metric} where {met}" if met else primary.metric


# How a report outside the constraints ranks, said once wherever constraints are listed.
INFEASIBLE_WORDS = "a report outside the constraints ranks behind every report inside, by its total violation"


# ---- the sweep's state file (sweeps/layout.py) holds them as JSON ---------------------------------

def goals_to_state(goals: Iterable[Goal]) -> list[dict[str, Any]]:
    return [asdict(goal) for goal in goals]


def constraints_to_state(constraints: Iterable[Constraint]) -> list[dict[str, Any]]:
    return [asdict(constraint) for constraint in constraints]


def goals_from_state(state: Mapping[str, Any]) -> list[Goal]:
    """The sweep's objectives; a single-objective sweep (or one run before objectives were
    recorded) is read as rate and its objective: the rate–distortion plane every report draws."""
    recorded = state.get("objectives")
    if recorded:
        return [Goal(**goal) for goal in recorded]
    primary = Goal(state.get("objective", METRICS["mel_distance"].key), state.get("mode", "min"))
    if primary.metric == RATE_METRIC:
        return [primary]
    return [Goal(RATE_METRIC, "min"), primary]


def constraints_from_state(state: Mapping[str, Any]) -> list[Constraint]:
    return [Constraint(**constraint) for constraint in state.get("constraints") or ()]
