"""Optuna through Ray Tune: the sampler named in the search space, and a searcher that tells
Optuna the truth about trials ASHA stopped."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from sweeps.layout import BEST_OBJECTIVE
from sweeps.objectives import Constraint, Goal, at_best_report
from sweeps.space.schema import SearchSpace

OPTUNA_DIRECTION = {"min": "minimize", "max": "maximize"}

RAY_TRIAL_ATTR, MLFLOW_RUN_ATTR = "ray_trial_id", "mlflow_run_id"  # Optuna user attributes
UNKNOWN_EXCESS = 1e300  # a constraint's metric never reported: violated, finitely (JSON)


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler. TPE, GP and NSGA-II turn multi-objective when the study has several
    directions, and model the constraints each trial carries (random ignores them)."""
    searcher = space.spec.searcher
    if searcher.sampler == "tpe":
        # multivariate + group model the conditional params jointly; constant_liar keeps
        # parallel workers from proposing the same point while results are pending. Optuna
        # flags these arguments experimental on every construction: a chosen, known risk.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=searcher.seed, n_startup_trials=searcher.startup_trials, multivariate=True,
                group=True, constant_liar=True)
    if searcher.sampler == "gp":
        return optuna.samplers.GPSampler(seed=searcher.seed, n_startup_trials=searcher.startup_trials)
    if searcher.sampler == "nsga2":
        # Generations of startup_trials (the space's rules keep two at least): Optuna's default
        # population of 50 exceeds most sweeps' trial counts, leaving NSGA-II a random search.
        return optuna.samplers.NSGAIISampler(seed=searcher.seed,
                                             population_size=searcher.startup_trials)
    return optuna.samplers.RandomSampler(seed=searcher.seed)


class PruneAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch tells Optuna COMPLETE with the last value for a trial ASHA stopped, and
    COMPLETE for an errored trial that reported once; that misleads TPE. Here a trial that ended
    before ``max_t`` is PRUNED (its intermediate values stay), and an errored one is FAIL. The
    metric is the trial's best so far, so a COMPLETE value and a PRUNED trial's last intermediate
    value are both its best report. Each Optuna trial carries its Ray trial id and MLflow run id.

    With several ``goals`` Ray still ranks by the one scalar (ASHA needs one), while Optuna's
    study has one direction per goal and is told every goal's value at the trial's best report;
    Optuna takes no intermediate values then, so a PRUNED trial carries none. With
    ``constraints``, each one's excess at the best report is set on the Optuna trial (named by
    its words, ``val/si_sdr_sampled >= 0``) before it is told, where the samplers read it."""

    def __init__(self, *args: Any, max_t: int, time_attr: str, goals: tuple[Goal, ...] = (),
                 constraints: tuple[Constraint, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_t, self.time_attr = max_t, time_attr
        self.goals, self.constraints = goals, constraints

    @property
    def multi_objective(self) -> bool:
        return len(self.__dict__.get("goals", ())) > 1  # absent in an older pickle

    def _already_finished(self, trial_id: str) -> bool:
        """True when the study already holds a final state for this trial: after a driver crash
        the restored searcher can be older than the study (it was told, then the driver died
        before Tune saved its state), and the trial re-runs its last steps from a checkpoint."""
        number = self._ot_trials[trial_id].number
        frozen = self._ot_study.get_trials(deepcopy=False)[number]
        return frozen.state.is_finished()

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and self._already_finished(trial_id):
            return
        if not self.multi_objective:  # Optuna refuses intermediate values of several objectives
            super().on_trial_result(trial_id, result)
        self._tag_run(trial_id, result)

    def _tag_run(self, trial_id: str, result: dict | None) -> None:
        """The trial's MLflow run id (reported with its results) as an Optuna user attribute."""
        run_id = (result or {}).get(MLFLOW_RUN_ATTR)
        tagged = self.__dict__.setdefault("_tagged_runs", set())  # absent in an older pickle
        if run_id and trial_id in self._ot_trials and trial_id not in tagged:
            self._ot_trials[trial_id].set_user_attr(MLFLOW_RUN_ATTR, run_id)
            tagged.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if self._already_finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        progress = int((result or {}).get(self.time_attr, 0))
        self._tag_run(trial_id, result)
        values = self._final_values(result)
        if not self.multi_objective:
            self._report_final(trial_id, result)
        if error or values is None:
            state, values = (TrialState.FAIL if error else TrialState.PRUNED), None
        elif progress < self.max_t:
            state, values = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
        if state != TrialState.FAIL:  # samplers read the constraints of pruned trials too
            self._set_constraints(trial_id, result or {})
        self._ot_study.tell(self._ot_trials[trial_id], values, state=state)
        self._completed_trials.add(trial_id)

    def _final_values(self, result: dict | None) -> float | list[float] | None:
        """What Optuna is told for a finished trial: the scalar, or every goal at the best report
        (None when the result lacks one)."""
        if not result or self.metric not in result:
            return None
        if not self.multi_objective:
            return result[self.metric]
        at_best = at_best_report(result)
        values = [at_best.get(goal.metric) for goal in self.goals]
        return None if any(v is None for v in values) else values

    def _set_constraints(self, trial_id: str, result: dict) -> None:
        at_best = at_best_report(result)
        for constraint in self.__dict__.get("constraints", ()):  # absent in an older pickle
            self._ot_trials[trial_id].set_constraint(
                constraint.words(), min(constraint.excess(at_best), UNKNOWN_EXCESS))

    def _report_final(self, trial_id: str, result: dict | None) -> None:
        """Tune hands the result that ends a trial to on_trial_complete only: record it as an
        intermediate value too, so a PRUNED trial's last one is its best report, as elsewhere."""
        if not result or self.metric not in result or TRAINING_ITERATION not in result:
            return
        with warnings.catch_warnings():  # a step already reported is kept (Optuna warns)
            warnings.simplefilter("ignore", UserWarning)
            self._ot_trials[trial_id].report(result[self.metric], int(result[TRAINING_ITERATION]))


def make_searcher(space: SearchSpace, storage_url: str, study_name: str) -> PruneAwareOptunaSearch:
    storage = optuna.storages.RDBStorage(storage_url)
    goals = tuple(space.goals)
    if space.multi_objective:  # Ray's OptunaSearch then loads this study, one direction per goal
        optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                            directions=[OPTUNA_DIRECTION[goal.mode] for goal in goals])
    searcher = PruneAwareOptunaSearch(
        space=space.define_by_run(), metric=BEST_OBJECTIVE, mode=space.spec.objective.mode,
        points_to_evaluate=space.optuna_points() or None, sampler=make_sampler(space),
        study_name=study_name, storage=storage, max_t=space.max_t,
        time_attr=space.spec.scheduler.time_attr, goals=goals,
        constraints=tuple(space.constraints))
    # The dashboard then shows the objectives' names, not "Objective 0".
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        searcher._ot_study.set_metric_names([goal.metric for goal in goals])
    return searcher


def fail_orphaned_trials(storage_url: str, study_name: str) -> int:
    """Marks FAIL the study's trials still RUNNING once every Tune trial has ended: proposals a
    killed driver made after Tune last saved its state, which no Tune trial will ever report."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(orphans)
