"""The distributions a search space may use: each kind is a class that checks itself against the
config schema and samples itself through an Optuna define-by-run trial. ``PARAM_KINDS`` is the one
list of kinds (``type:`` in the YAML).

Adding a kind = one class here or in a file of its own (a ``type: Literal["<name>"]`` field and
the three abstract methods: a kind that forgets one cannot be instantiated) plus one entry in
``PARAM_KINDS``. The representation is kept apart from the sampling backend as in Ray Tune
(``Domain`` vs ``OptunaSearch``): only ``suggest`` talks to Optuna, through the trial it is given.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vae.config_fields import FieldSpec

# Why the base config refuses ``path = value`` (None when it accepts it).
Rejects = Callable[[Any], str | None]


class ParamKind(BaseModel, ABC):
    """One searched config value. ``condition``: sample it only when earlier categorical params
    took these values (so TPE never models a value that had no effect)."""

    # inf/nan bounds compare as ordered numbers and would reach Optuna: refuse them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: str
    condition: dict[str, Any] | None = None

    @abstractmethod
    def check(self, key: str, field: FieldSpec, rejects: Rejects) -> list[str]:
        """Problems (each starting with ``key``) with this distribution for the config leaf."""

    @abstractmethod
    def suggest(self, trial: Any, name: str) -> Any:
        """Sample a value through an Optuna trial (``trial.suggest_*``)."""

    @abstractmethod
    def point_problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be a starting point (``points_to_evaluate``); None if it can."""

    @property
    def json_encoded(self) -> bool:
        """Whether Optuna sees this param's values as JSON strings (it stores scalars only)."""
        return False


class _RangeParam(ParamKind):
    """A numeric range ``[low, high]``, optionally log-scaled or stepped."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @abstractmethod
    def _step_set(self) -> bool:
        """Whether a step other than the kind's default is set."""

    @abstractmethod
    def _accepts(self, field: FieldSpec) -> bool:
        """Whether this range may search a config leaf of ``field.kind``."""

    def check(self, key: str, field: FieldSpec, rejects: Rejects) -> list[str]:
        if not self._accepts(field):
            return [f"{key}: a {self.type} range on a {field.kind} config key "
                    f"(use type: {'int' if field.kind == 'int' else 'categorical'})"]
        problems = []
        if not self.low < self.high:
            problems.append(f"{key}: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            problems.append(f"{key}: log scale needs low > 0 (got {self.low})")
        if self.log and self._step_set():
            problems.append(f"{key}: step cannot be combined with log scale")
        if self.step is not None and self.step <= 0:
            problems.append(f"{key}.step: must be positive (got {self.step})")
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if (why := rejects(value)) is not None:
                problems.append(f"{key}.{bound}: {value!r} is outside what the config accepts: {why}")
        return problems

    def point_problem(self, value: Any) -> str | None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not self.low <= value <= self.high:
            return f"{value!r} is outside [{self.low}, {self.high}]"
        return None


class FloatParam(_RangeParam):
    type: Literal["float"]
    step: float | None = None

    def _step_set(self) -> bool:
        return bool(self.step)

    def _accepts(self, field: FieldSpec) -> bool:
        return field.kind == "float"

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class IntParam(_RangeParam):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1

    def _step_set(self) -> bool:
        return self.step not in (None, 1)

    def _accepts(self, field: FieldSpec) -> bool:
        return field.kind in ("float", "int")

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(ParamKind):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    def check(self, key: str, field: FieldSpec, rejects: Rejects) -> list[str]:
        problems = []
        if len(set(map(repr, self.choices))) != len(self.choices):
            problems.append(f"{key}.choices: repeated choice in {self.choices}")
        for choice in self.choices:
            if (why := rejects(choice)) is not None:
                problems.append(f"{key}.choices: {choice!r} is not valid for the config: {why}")
        return problems

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, [optuna_choice(c) for c in self.choices])

    def point_problem(self, value: Any) -> str | None:
        return None if value in self.choices else f"{value!r} is not one of {self.choices}"

    @property
    def json_encoded(self) -> bool:
        # list/mapping choices (adversarial.discriminators) travel as JSON strings
        return not all(map(_is_scalar, self.choices))


PARAM_KINDS: dict[str, type[ParamKind]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def optuna_choice(value: Any) -> Any:
    """A categorical value as Optuna stores it: scalars as they are, anything else as JSON."""
    return value if _is_scalar(value) else json.dumps(value, sort_keys=True)


class DefineByRun:
    """Optuna define-by-run space: params in file order, conditional ones only when their
    condition holds (so TPE never models a value that had no effect). A class, not a closure,
    because Ray pickles the searcher with plain pickle to resume it."""

    def __init__(self, params: dict[str, ParamKind]) -> None:
        self.params = params

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for path, param in self.params.items():
            if param.condition and any(chosen.get(k, _MISSING) != optuna_choice(v)
                                       for k, v in param.condition.items()):
                continue
            chosen[path] = param.suggest(trial, path)


_MISSING = object()
