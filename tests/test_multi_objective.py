"""Several objectives and constraints (issue 19): one real sweep (Ray, Optuna, MLflow, Lightning
trials of a tiny model) told three objectives under a constraint, checked in Optuna's study, the
sweep's summary, MLflow's parent run and every report's scalar; and ASHA, run for real, stopping
the trial that violates a constraint although its primary objective is the best."""

from __future__ import annotations

import math

import optuna
import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from sweeps.layout import OBJECTIVE
from sweeps.objectives import Constraint, at_best_report, ranked_value, total_violation
from sweeps.results.pareto import HYPERVOLUME_METRIC, REFERENCE_PARAM
from sweeps.results.records import read_results, sweep_trials
from sweeps.execution.trial import TrialContext, objective_value
from tests.test_sweep import run_space
from vae.metric_table import METRICS

RATE, MEL, SISDR = (METRICS[n].key for n in ("kl_kbps", "mel_distance_sampled", "si_sdr_sampled"))
# Met by some reports and not others of this tiny model (its rate is 0.5-3 kbps).
RATE_BOUND = 1.7
SPACE = {
    "name": "multi",
    "base": {"overrides": {
        "model.channels": 4, "model.channel_multipliers": [1, 2], "model.strides": [4, 8],
        "model.latent_dim": 4, "data.source": "synthetic", "data.chunk_seconds": 0.25,
        "data.batch_size": 2, "data.val_chunks": 2, "trainer.max_steps": 6,
        "trainer.val_every_steps": 2, "trainer.log_every_steps": 2,
        "tracking.audio_examples": 0}},
    "objectives": [{"metric": RATE, "mode": "min"}, {"metric": MEL, "mode": "min"},
                   {"metric": SISDR, "mode": "max"}],
    "primary": MEL,
    "constraints": [{"metric": RATE, "max": RATE_BOUND}],
    "searcher": {"sampler": "tpe", "seed": 0, "startup_trials": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 5,
    "max_concurrent_trials": 2,
    "params": {"loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True}},
}
GOALS = ((RATE, "min"), (MEL, "min"), (SISDR, "max"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    space, paths, tracking_uri, summary = run_space(SPACE, tmp_path_factory.mktemp("multi"))
    state, trials = sweep_trials(paths)
    study = optuna.load_study(study_name=paths.name, storage=paths.optuna_url)
    return {"space": space, "paths": paths, "summary": summary, "trials": trials,
            "study": study, "tracking_uri": tracking_uri}


def dominates(a: dict, b: dict) -> bool:
    better = [(a[m] <= b[m]) if mode == "min" else (a[m] >= b[m]) for m, mode in GOALS]
    strictly = [(a[m] < b[m]) if mode == "min" else (a[m] > b[m]) for m, mode in GOALS]
    return all(better) and any(strictly)


def test_optuna_is_told_every_objective_at_the_best_report_and_the_constraint(sweep):
    study, trials = sweep["study"], {t.trial_id: t for t in sweep["trials"]}
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE", "MAXIMIZE"]
    assert study.metric_names == [RATE, MEL, SISDR]
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == SPACE["num_samples"]
    for frozen in finished:
        record = trials[frozen.user_attrs["ray_trial_id"]]
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            assert frozen.values == pytest.approx([record.metrics[m] for m, _ in GOALS])
        else:  # stopped by ASHA: Optuna takes no values of several objectives for it
            assert frozen.state == optuna.trial.TrialState.PRUNED and frozen.values is None
        # what the samplers read: each constraint's excess at the best report, by its words
        assert frozen.constraints == {f"{RATE} <= {RATE_BOUND}":
                                      pytest.approx(record.metrics[RATE] - RATE_BOUND)}


def test_every_report_is_ranked_by_the_primary_objective_constraints_first(sweep):
    constraints = [Constraint(RATE, high=RATE_BOUND)]
    reports = [r for t in sweep["trials"]
               for r in read_results(sweep["paths"].local_experiment_dir() / f"trial_{t.trial_id}")]
    assert reports
    for report in reports:
        violation = total_violation(constraints, report)
        assert report[OBJECTIVE] == pytest.approx(ranked_value(report[MEL], "min", violation))
        assert at_best_report(report).keys() >= {RATE, MEL, SISDR}
    feasible = [r[OBJECTIVE] for r in reports if r[RATE] <= RATE_BOUND]
    infeasible = [r[OBJECTIVE] for r in reports if r[RATE] > RATE_BOUND]
    if feasible and infeasible:
        assert max(feasible) < min(infeasible)


def test_the_front_is_the_feasible_non_dominated_trials_with_its_hypervolume_on_the_parent(sweep):
    eligible = [t.metrics for t in sweep["trials"] if t.outcome != "failed"
                and t.metrics.get(RATE, math.inf) <= RATE_BOUND]
    by_id = {t.trial_id: t.metrics for t in sweep["trials"]}
    expected = {t.trial_id for t in sweep["trials"] if t.metrics in eligible
                and not any(dominates(other, t.metrics) for other in eligible)}
    front = sweep["summary"]["front"]
    assert set(front["trials"]) == expected
    assert [goal["metric"] for goal in front["goals"]] == [RATE, MEL, SISDR]
    if expected:  # the worst value of each objective among the feasible trials
        assert front["reference"] == pytest.approx(
            [max(m[RATE] for m in eligible), max(m[MEL] for m in eligible),
             min(m[SISDR] for m in eligible)])
        assert all(by_id[i][RATE] <= RATE_BOUND for i in front["trials"])
    from sweeps.execution.tracking import client_for

    parent = client_for(sweep["tracking_uri"]).get_run(sweep["summary"]["mlflow"]["parent_run_id"])
    assert parent.data.metrics[HYPERVOLUME_METRIC] == pytest.approx(front["hypervolume"])
    assert float(parent.data.params[REFERENCE_PARAM + MEL]) == pytest.approx(front["reference"][1],
                                                                            rel=1e-5)
    assert "constraints" in parent.data.params and "<= 1.7" in parent.data.params["constraints"]


# ---- ASHA, for real, on the scalar -----------------------------------------------------------------

CONTEXT = TrialContext(sweep_name="t", base_config={}, tracking_uri="", experiment_id="",
                       parent_run_id="", objective_metric=MEL, mode="min",
                       constraints=(Constraint(SISDR, low=0.0),))


def reporting(config: dict) -> None:
    """Reports what ``config`` says, ranked by the trial's own objective_value."""
    for step in range(1, 5):
        metrics = {MEL: config["mel"], SISDR: config["si_sdr"], "step": step}
        tune.report({**metrics, OBJECTIVE: objective_value(metrics, CONTEXT)})


def test_asha_stops_the_trial_outside_the_constraints_despite_its_better_primary():
    """The feasible trial runs first and sets the rung; the next has the lower mel distance but a
    negative SI-SDR, so by the scalar it is worse and ASHA stops it at the first rung (by the mel
    distance alone it would run on)."""
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        results = tune.Tuner(
            reporting,
            param_space={"mel": tune.grid_search([3.0, 1.0]),
                         "si_sdr": tune.sample_from(lambda spec: 5.0 if spec.config.mel == 3.0 else -20.0)},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE, mode="min", max_concurrent_trials=1,
                scheduler=ASHAScheduler(time_attr="step", max_t=4, grace_period=1,
                                        reduction_factor=2)),
        ).fit()
    finally:
        ray.shutdown()
    steps = {r.config["mel"]: r.metrics["step"] for r in results}
    assert steps == {3.0: 4, 1.0: 1}


def test_the_end_summary_gives_the_front_and_the_command_that_exports_it(sweep):
    from sweeps.execution.summary import end_summary

    text = end_summary(sweep["summary"], sweep["paths"], sweep["space"])
    front = sweep["summary"]["front"]
    assert f"Front ({RATE}, {MEL}, {SISDR}): {front['line']}" in text
    if front["trials"]:
        assert f"hypervolume {front['hypervolume']:.4g} from (" in front["line"]
    assert f"sweep-export {sweep['paths'].name} --front -o " in text
