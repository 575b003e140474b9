"""A trial's MLflow run (sweeps/execution/trial.py) says what the sweep's report says: the
objective's formula in the sweep's one wording, the objective of every validation beside the
distortion and rate it is made of, and the trial's best report under best/ — the values it is
ranked, kept and exported by — also when a restart lost what an attempt had logged."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.layout import BEST_OBJECTIVE, BEST_STEP
from sweeps.execution.progress import SweepView
from sweeps.results.records import read_results
from sweeps.space.schema import load_space
from sweeps.execution.tracking import TRIAL_TAG, child_runs, client_for
from sweeps.execution.trial import (BEST_REPORT, TrialContext, TuneReportCallback, best_report,
                                    objective_formula)
from tests.conftest import MICRO
from tests.test_sweep import run_space
from vae.metric_table import METRICS
from vae.training.mlflow import (BEST_OBJECTIVE_METRIC, BEST_STEP_METRIC, OBJECTIVE_FORMULA_TAG,
                                 OBJECTIVE_METRIC, best_metric, ensure_experiment)

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
RATE, DISTORTION = METRICS["kl_kbps"].key, METRICS["mel_distance_sampled"].key


def context_of(space) -> TrialContext:
    """The objective part of the context the driver gives a trial of ``space``."""
    spec, budget = space.spec, space.spec.rate_budget
    return TrialContext(sweep_name=space.name, base_config={}, tracking_uri="", experiment_id="",
                        parent_run_id="", objective_metric=spec.objective.metric,
                        mode=spec.objective.mode, max_kbps=budget.max_kbps if budget else None,
                        penalty_per_kbps=budget.penalty_per_kbps if budget else 1.0,
                        constraints=tuple(space.constraints))


def test_the_objective_formula_is_the_wording_of_the_live_view_and_summary():
    penalised = load_space(SPACES / "kl.yaml")
    formula = objective_formula(context_of(penalised))
    assert formula == "val/mel_distance_sampled + 0.5 per kbps of val/kl_kbps over 6"
    assert SweepView.of(penalised).ranked_by == f"objective ({formula})"
    plain = load_space(SPACES / "music_cpu.yaml", {"rate_budget": None})
    assert objective_formula(context_of(plain)) == SweepView.of(plain).ranked_by == \
        "val/mel_distance_sampled"
    constrained = load_space(SPACES / "smoke.yaml")
    formula = objective_formula(context_of(constrained))
    assert formula == "val/mel_distance_sampled where val/si_sdr_sampled >= 0"
    assert SweepView.of(constrained).ranked_by == f"objective ({formula})"


def test_a_restored_best_report_outlasts_what_a_lost_attempt_logged(tmp_path):
    """An attempt logged a better report at step 4, then died before its checkpoint was kept; the
    trial resumes from step 2, whose report stays its best. The run must end with that one."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(ensure_experiment(client, "audio-vae")).info.run_id
    context = context_of(load_space(SPACES / "smoke.yaml"))
    kept = {"objective": 3.0, DISTORTION: 3.0, RATE: 2.0, METRICS["si_sdr"].key: -1.5}
    lost = {"objective": 2.0, DISTORTION: 2.0, RATE: 9.0, METRICS["si_sdr"].key: 4.0}

    def callback(report: dict, step: int) -> TuneReportCallback:
        running_best = {BEST_OBJECTIVE: report["objective"], BEST_STEP: step,
                        BEST_REPORT: best_report(report, step)}
        return TuneReportCallback(context, client, run_id, running_best)

    callback(lost, 4).log_to_run(lost["objective"], 4)
    time.sleep(0.01)  # the resumed attempt logs later, as it does
    callback(kept, 2).log_to_run(3.5, 4)  # its step 4 again, worse than its best at step 2
    metrics = client.get_run(run_id).data.metrics
    expected = {BEST_OBJECTIVE_METRIC: 3.0, BEST_STEP_METRIC: 2.0, best_metric(DISTORTION): 3.0,
                best_metric(RATE): 2.0, best_metric(METRICS["si_sdr"].key): -1.5}
    assert {key: metrics[key] for key in expected} == expected
    assert metrics[OBJECTIVE_METRIC] == 3.5


@pytest.mark.slow
def test_a_rate_penalised_trial_logs_its_formula_objective_and_parts(tmp_path):
    """A real one-trial sweep at a rate budget it cannot meet: every validation's objective is
    its distortion plus the penalty on its rate, the run says so, and the best report's
    distortion and rate sit beside the best objective on the trial's run and the sweep's."""
    budget = {"max_kbps": 0.01, "penalty_per_kbps": 0.5}
    _, paths, tracking_uri, summary = run_space({
        "name": "rate",
        "base": {"overrides": {**MICRO, "trainer.max_steps": 6, "trainer.val_every_steps": 2}},
        "objective": {"metric": DISTORTION, "mode": "min"}, "rate_budget": budget,
        "scheduler": {"type": "none"}, "num_samples": 1, "max_concurrent_trials": 1,
        "resources": {"cpu": 1},
        "params": {"loss.kl.weight": {"type": "float", "low": 1e-5, "high": 1e-4, "log": True}}},
        tmp_path)
    client = client_for(tracking_uri)
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    (run,) = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    reports = read_results(Path(paths.experiment_dir) / f"trial_{run.data.tags[TRIAL_TAG]}")
    assert len(reports) == 3

    formula = f"{DISTORTION} + 0.5 per kbps of {RATE} over 0.01"
    assert run.data.tags[OBJECTIVE_FORMULA_TAG] == parent.data.tags[OBJECTIVE_FORMULA_TAG] == formula
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, OBJECTIVE_METRIC)}
    assert history == {r["step"]: r["objective"] for r in reports}
    for report in reports:  # penalised: the objective is not its distortion
        assert report["objective"] == pytest.approx(
            report[DISTORTION] + 0.5 * (report[RATE] - budget["max_kbps"]))
        assert report["objective"] > report[DISTORTION] + 0.1

    best = min(reports, key=lambda r: (r["objective"], r["step"]))  # the earliest on ties
    expected = {best_metric(m.key): best[m.key] for m in METRICS.values()
                if math.isfinite(best[m.key])}
    expected |= {BEST_OBJECTIVE_METRIC: best["objective"], BEST_STEP_METRIC: best["step"]}
    assert {key: run.data.metrics.get(key) for key in expected} == expected
    assert {key: parent.data.metrics.get(key) for key in expected} == expected
