"""Search-space YAML → a validated sweep specification → an Optuna define-by-run space.

Everything is checked before Ray starts: the file's structure (pydantic), every dotted path
against the VAE config schema, every bound and distribution, conditions and starting points.
All problems are collected and reported together, each with the file and the key."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator

from sweeps.space.distributions import PARAM_KINDS, DefineByRun, ParamKind, optuna_choice
from sweeps.layout import LayoutError, check_name
from sweeps.objectives import Constraint, Goal
from sweeps.space.objectives import (ConstraintSpec, ListedObjective, Objective, StrictSection,
                                     check_objectives)
from sweeps.space.rules import (condition_problems, point_problems, process_problems,
                                searcher_problems)
from vae.config import ConfigError, VAEConfig, load_config
from vae.config_fields import field_spec
from vae.user_files import UserFileError, parse_yaml, read_user_text



class SpaceError(ValueError):
    """A search space that cannot run; the message lists every problem with file and key."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        lines = "\n".join("  " + p.replace("\n", "\n  ") for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the search space:\n{lines}")


def _param_union() -> Any:
    """The ``params`` values: one of the kinds registered when this module is imported, picked by
    their ``type``."""
    for name, cls in PARAM_KINDS.items():
        tag = typing.get_args(cls.model_fields["type"].annotation)
        if tag != (name,):
            raise TypeError(f"PARAM_KINDS[{name!r}] is {cls.__name__}, whose type is {tag}, not {name!r}")
    return Annotated[Union[tuple(PARAM_KINDS.values())], Field(discriminator="type")]  # noqa: UP007


Param = _param_union()


class BaseSection(StrictSection):
    config: str | None = Field(None, description="a vae config YAML, relative to the space file")
    overrides: dict[str, Any] = Field(default_factory=dict)


class RateBudget(StrictSection):
    """Distortion at a rate budget: trials above ``max_kbps`` have their objective penalised by
    ``penalty_per_kbps`` for every kbps over, so the searcher looks for the best model that fits."""

    max_kbps: float = Field(gt=0)
    penalty_per_kbps: float = Field(1.0, gt=0)


class Searcher(StrictSection):
    sampler: Literal["tpe", "gp", "random", "nsga2"] = "tpe"
    seed: int = 0
    startup_trials: int = Field(4, ge=0, description="random trials first; NSGA-II: its population")


class Scheduler(StrictSection):
    type: Literal["asha", "none"] = "asha"
    time_attr: Literal["training_iteration", "step"] = "training_iteration"
    max_t: int | None = Field(None, ge=1, description="default: the trial's number of validations")
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class Resources(StrictSection):
    cpu: float = Field(1.0, gt=0, description="per worker")
    gpu: float = Field(0.0, ge=0, description="per worker")
    workers: int = Field(1, ge=1, description="data-parallel processes per trial (Ray Train)")

    @field_validator("cpu", "gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        # Ray shares a device between trials only below 1; above it, 1.5 GPUs cannot be placed
        if value > 1 and not value.is_integer():
            raise ValueError(f"a fraction above 1 must be a whole number (got {value})")
        return value


class SpaceFile(StrictSection):
    name: str
    description: str = ""
    base: BaseSection = Field(default_factory=BaseSection)
    objective: Objective | None = None
    objectives: list[ListedObjective] | None = Field(None, min_length=2)
    primary: str | None = Field(None, description="the objective ASHA ranks by (default: the first)")
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    rate_budget: RateBudget | None = None
    searcher: Searcher = Field(default_factory=Searcher)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=0, description="retries of a failing trial")
    resources: Resources = Field(default_factory=Resources)
    params: dict[str, Param] = Field(min_length=1)
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _safe_folder_name(cls, value: str) -> str:
        # a sweep's folder name: the rule is sweeps.layout's, reported here with the file and key
        try:
            return check_name(value)
        except LayoutError as exc:
            raise ValueError(str(exc)) from None


class SearchSpace:
    """A validated search space: the parsed file plus the resolved base config."""

    def __init__(self, path: Path, spec: SpaceFile, base_config: VAEConfig, raw_text: str) -> None:
        self.path, self.spec, self.base_config, self.raw_text = path, spec, base_config, raw_text

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def multi_objective(self) -> bool:
        return self.spec.objectives is not None

    @property
    def goals(self) -> list[Goal]:
        """Every objective Optuna is told (one for a single-objective space)."""
        listed = self.spec.objectives or [self.spec.objective]
        return [Goal(o.metric, o.mode, getattr(o, "reference", None)) for o in listed]

    @property
    def primary(self) -> Goal:
        """The objective ASHA, the kept checkpoint and every ranking go by (``spec.objective``)."""
        return next(goal for goal in self.goals if goal.metric == self.spec.objective.metric)

    @property
    def constraints(self) -> list[Constraint]:
        return [Constraint(c.metric, c.min, c.max) for c in self.spec.constraints]

    @property
    def reports_per_trial(self) -> int:
        trainer = self.base_config.trainer
        return math.ceil(trainer.max_steps / trainer.val_every_steps)

    @property
    def max_t(self) -> int:
        """The ASHA horizon in its time unit; a trial that reaches it is complete, not pruned."""
        if self.spec.scheduler.max_t is not None:
            return self.spec.scheduler.max_t
        if self.spec.scheduler.time_attr == "step":
            return self.base_config.trainer.max_steps
        return self.reports_per_trial

    def define_by_run(self) -> DefineByRun:
        return DefineByRun(self.spec.params)

    @property
    def json_params(self) -> tuple[str, ...]:
        """Categorical params with list/mapping choices: Optuna stores only scalars, so those
        choices travel as JSON strings and are decoded in the trial (``decode_sampled``)."""
        return tuple(name for name, p in self.spec.params.items() if p.json_encoded)

    def optuna_points(self) -> list[dict[str, Any]]:
        """points_to_evaluate as Optuna sees them (JSON-encoded where needed)."""
        json_params = self.json_params
        return [{k: (optuna_choice(v) if k in json_params else v) for k, v in point.items()}
                for point in self.spec.points_to_evaluate]


def decode_sampled(sampled: dict[str, Any], json_params: tuple[str, ...]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in json_params and isinstance(v, str) else v)
            for k, v in sampled.items()}


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Parse and validate a search-space file; SpaceError lists every problem found."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(str(path), ["file not found"])
    try:  # duplicate keys, alias bombs, non-UTF-8 and huge files are refused here
        raw_text = read_user_text(path)
        raw = parse_yaml(raw_text, str(path))
    except UserFileError as exc:
        raise SpaceError(str(path), [exc.problem]) from None
    if not isinstance(raw, dict):
        raise SpaceError(str(path), ["expected a mapping at the top level (name, params, ...)"])
    raw.update(overrides or {})
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as exc:
        raise SpaceError(str(path), [_pydantic_problem(err) for err in exc.errors()]) from None

    problems: list[str] = []
    base_config = _base_config(path, spec, problems)
    check_objectives(spec, problems)
    _check_scheduler(spec, base_config, problems)
    for name, param in spec.params.items():
        _check_param(name, param, spec, base_config, problems)
    problems.extend(point_problems(spec.points_to_evaluate, spec.params))
    problems.extend(process_problems(spec))
    problems.extend(searcher_problems(spec))
    if problems:
        raise SpaceError(str(path), problems)
    return SearchSpace(path.resolve(), spec, base_config, raw_text)


def _pydantic_problem(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    if loc[:1] == ["params"] and len(loc) > 2 and loc[2] in PARAM_KINDS:
        del loc[2]  # the union tag pydantic inserts: "params.x.float.low" -> "params.x.low"
    key = ".".join(loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        return f"{key}: type must be one of {', '.join(PARAM_KINDS)} (got {err.get('input')!r})"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def _base_config(path: Path, spec: SpaceFile, problems: list[str]) -> VAEConfig:
    config_path = None
    if spec.base.config:
        config_path = (path.parent / spec.base.config).resolve()
        if not config_path.is_file():
            problems.append(f"base.config: file not found: {config_path}")
            config_path = None
    try:
        return load_config(config_path, spec.base.overrides, overrides_source="base.overrides")
    except ConfigError as exc:
        problems.append(f"base: {exc}")
        return VAEConfig()


def _check_scheduler(spec: SpaceFile, config: VAEConfig, problems: list[str]) -> None:
    sched = spec.scheduler
    if sched.type == "none":
        return
    reports = math.ceil(config.trainer.max_steps / config.trainer.val_every_steps)
    horizon = config.trainer.max_steps if sched.time_attr == "step" else reports
    if sched.max_t is not None and sched.max_t > horizon:
        problems.append(f"scheduler.max_t: {sched.max_t} exceeds what a trial reaches "
                        f"({horizon} {sched.time_attr} with trainer.max_steps="
                        f"{config.trainer.max_steps}, val_every_steps={config.trainer.val_every_steps})")
    max_t = sched.max_t or horizon
    if sched.grace_period > max_t:
        problems.append(f"scheduler.grace_period: {sched.grace_period} exceeds max_t {max_t}")
    if sched.type == "asha" and reports < 2:
        problems.append("scheduler: ASHA needs at least 2 validations per trial "
                        f"(trainer.max_steps={config.trainer.max_steps}, "
                        f"val_every_steps={config.trainer.val_every_steps})")


def _check_param(name: str, param: ParamKind, spec: SpaceFile, base: VAEConfig,
                 problems: list[str]) -> None:
    key = f"params.{name}"
    try:
        field = field_spec(VAEConfig, name)
    except ConfigError as exc:
        problems.append(f"{key}: not a config key: {exc}")
        return
    if name in spec.base.overrides:
        problems.append(f"{key}: also set in base.overrides; a searched key must not be fixed there")
    problems.extend(param.check(key, field, lambda value: _rejects(base, name, value)))
    problems.extend(condition_problems(name, param, spec.params))


def _rejects(base: VAEConfig, name: str, value: Any) -> str | None:
    """Why the base config refuses ``name = value`` (None if it accepts it)."""
    try:
        base.override({name: value})
    except ConfigError as exc:
        return str(exc).split("\n", 1)[-1].strip()
    return None
