"""End-to-end sweeps with real Ray, Optuna and an MLflow sqlite store (tiny models on CPU).

One sweep (module fixture) is run once and inspected by several tests: ASHA pruning reaches
MLflow (KILLED) and Optuna (PRUNED); a trial whose loss goes NaN ends FAILED while the sweep
completes; the report and the export come from its results. One trial's learning rate overshoots:
its first report is its best and the sweep's, so ranking and export must use the best report and
its checkpoint, not the last; every tool shows the same value per trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import ray
import torch
import yaml

from sweeps.execution.driver import run_sweep
from sweeps.results.export import export_best
from sweeps.layout import BEST_OBJECTIVE, BEST_STEP, SweepPaths, trial_dirname
from sweeps.results.records import read_results, read_running_best, sweep_trials
from sweeps.results.report import IMPORTANCE_MIN_TRIALS, build_report
from sweeps.space.schema import load_space
from sweeps.execution.search import MLFLOW_RUN_ATTR, RAY_TRIAL_ATTR
from sweeps.execution.tracking import (BEST_RUN_TAG, BEST_TRIAL_TAG, COUNT_METRIC, NOTE_TAG,
                                       OUTCOME_TAG, TRIAL_TAG, child_runs, client_for)
from tests.conftest import MICRO
from vae.inference import load_bundle
from vae.training.mlflow import BEST_OBJECTIVE_METRIC, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

pytestmark = pytest.mark.slow

EXPLODING_LR = 1e30  # Adam moves every weight by ~lr: the next forward overflows to NaN
# Big first steps reach the sweep's best mel distance by the first validation (~5.6 at step 2,
# others stay above 6.5), then overshoot: its later reports are worse (~6.3, ~6.0).
OVERSHOOT_LR = 0.5
SPACE = {
    "name": "e2e",
    "base": {"overrides": {**MICRO, "trainer.max_steps": 6, "trainer.val_every_steps": 2}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 1, "startup_trials": 2},
    # One trial at a time makes ASHA's decisions independent of timing.
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 5,
    "max_concurrent_trials": 1,
    "resources": {"cpu": 1},
    "params": {
        "optim.lr": {"type": "categorical", "choices": [3e-3, 1e-7, EXPLODING_LR, OVERSHOOT_LR]},
        "loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    },
    "points_to_evaluate": [
        {"optim.lr": EXPLODING_LR, "loss.kl.weight": 1e-4},
        {"optim.lr": 3e-3, "loss.kl.weight": 1e-4},
        {"optim.lr": 1e-7, "loss.kl.weight": 1e-4},  # barely moves: worse than the one before
        {"optim.lr": OVERSHOOT_LR, "loss.kl.weight": 1e-4},
    ],
}


def run_space(raw: dict, root: Path) -> tuple[Any, SweepPaths, str, dict]:
    """The search space ``raw`` swept to the end under ``root`` (results, mlflow.db) on a local
    Ray of 2 CPUs: (space, paths, tracking URI, summary)."""
    space_file = root / "space.yaml"
    space_file.write_text(yaml.safe_dump(raw))
    space = load_space(space_file)
    paths = SweepPaths(str(root / "results"), raw["name"])
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    # the state API (dashboard) frees a stopped multi-worker trial's cores (see start_ray in
    # sweeps/execution/driver.py)
    ray.init(num_cpus=2, include_dashboard=space.spec.resources.workers > 1,
             dashboard_host="127.0.0.1")
    try:
        summary = run_sweep(space, paths, tracking_uri=tracking_uri)
    finally:
        ray.shutdown()
    return space, paths, tracking_uri, summary


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    space, paths, tracking_uri, summary = run_space(SPACE, root)
    client = client_for(tracking_uri)
    runs = child_runs(client, summary_experiment(client, summary), summary["mlflow"]["parent_run_id"])
    return {"root": root, "space": space, "paths": paths, "summary": summary, "client": client,
            "runs": runs, "tracking_uri": tracking_uri}


def summary_experiment(client, summary):
    return client.get_run(summary["mlflow"]["parent_run_id"]).info.experiment_id


def lr_of(run) -> float:
    return float(run.data.params["searched/optim.lr"])


def test_one_child_run_per_trial_none_left_running(sweep):
    runs = sweep["runs"]
    trial_ids = [r.data.tags[TRIAL_TAG] for r in runs]
    assert len(runs) == SPACE["num_samples"] == len(set(trial_ids))
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)
    parent = sweep["client"].get_run(sweep["summary"]["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in sweep["client"].list_artifacts(parent.info.run_id)}
    assert {"search_space", "base_config.yaml", "report"} <= artifacts


def test_mlflow_experiment_opens_on_runs_and_the_parent_describes_the_sweep(sweep):
    client, summary = sweep["client"], sweep["summary"]
    experiment = client.get_experiment(summary_experiment(client, summary))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # runs table, not traces
    # one artifact location for single runs and sweeps: beside the sqlite store
    assert experiment.artifact_location == (sweep["root"] / "mlartifacts").as_uri()
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    counts = {o: sum(r.data.tags[OUTCOME_TAG] == o for r in sweep["runs"])
              for o in ("completed", "pruned", "failed")}
    assert {o: parent.data.metrics[COUNT_METRIC.format(o)] for o in counts} == counts
    assert counts == {o: summary["trials"].get(o, 0) for o in counts}
    note = parent.data.tags[NOTE_TAG]
    assert note.startswith("**e2e**") and all(f"`{name}`" in note for name in SPACE["params"])


def test_exploding_trial_fails_with_its_reason_and_the_sweep_goes_on(sweep):
    failed = [r for r in sweep["runs"] if lr_of(r) == EXPLODING_LR]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert all("non-finite loss" in r.data.tags["failure_reason"] for r in failed)
    survivors = [r for r in sweep["runs"] if lr_of(r) != EXPLODING_LR]
    assert survivors and all(r.info.status in ("FINISHED", "KILLED") for r in survivors)
    assert sweep["summary"]["trials"].get("failed") == len(failed)


def test_asha_stopped_trials_are_killed_in_mlflow_and_pruned_in_optuna(sweep):
    killed = [r for r in sweep["runs"] if r.info.status == "KILLED"]
    assert killed, "ASHA stopped no trial"
    for run in killed:
        assert run.data.tags[OUTCOME_TAG] == "pruned"
        steps = [m.step for m in sweep["client"].get_metric_history(run.info.run_id, "val/mel_distance")]
        assert max(steps) < 6  # stopped before max_steps
    study = optuna.load_study(study_name="e2e", storage=sweep["summary"]["optuna_storage"])
    states = [t.state for t in study.trials]
    assert len(study.trials) == SPACE["num_samples"]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(killed)
    finished = [r for r in sweep["runs"] if r.info.status == "FINISHED"]
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(finished)
    assert states.count(optuna.trial.TrialState.FAIL) == sum(r.info.status == "FAILED" for r in sweep["runs"])


def test_child_runs_hold_config_metrics_and_audio(sweep):
    run = next(r for r in sweep["runs"] if r.info.status == "FINISHED")
    params = run.data.params
    assert params["loss.kl.weight"] == params["searched/loss.kl.weight"]
    assert params["model.channels"] == "4"
    for metric in ("val/mel_distance", "val/stft_distance", "val/si_sdr", "val/kl_kbps",
                   "val/active_units", "train/loss", "train/mel"):
        assert metric in run.data.metrics
    audio = sweep["client"].list_artifacts(run.info.run_id, "audio")
    assert audio and sweep["client"].list_artifacts(run.info.run_id, audio[0].path)


def test_report_table_counts_and_plots(sweep, tmp_path):
    summary = build_report(sweep["paths"], tmp_path)
    assert summary["trials"] == SPACE["num_samples"]
    counts = summary["outcomes"]
    assert counts.get("failed") == 1 and counts.get("pruned", 0) >= 1
    assert 0 < summary["compute"]["fraction"] < 1  # pruning saved compute
    for name in ("trials.csv", "trials.md", "summary.json", "rate_distortion.png",
                 "learning_curves.png", "parallel_coordinate.png", "slice.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    # importance is drawn only from IMPORTANCE_MIN_TRIALS completed trials; each plot written is listed
    assert ("importance.png" in summary["plots"]) == \
        (counts.get("completed", 0) >= IMPORTANCE_MIN_TRIALS)
    assert all((tmp_path / name).is_file() for name in summary["plots"])
    table = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(table) == SPACE["num_samples"] + 1
    markdown = (tmp_path / "trials.md").read_text()
    assert f"{SPACE['num_samples']} trials: {counts.get('completed', 0)} completed, " \
        f"{counts['pruned']} pruned, 1 failed" in markdown
    assert f"of {SPACE['num_samples'] * 3:g} training_iteration" in markdown  # max_t = 3
    assert "## Parameter importance" in markdown and all(
        name in markdown for name in summary["importance"])
    assert summary["objective"] == SPACE["objective"]["metric"]


def reports_by_trial(sweep) -> dict[str, list[dict]]:
    """Every trial's reports as Ray Tune wrote them (result.json), for trials that reported."""
    experiment = Path(sweep["paths"].experiment_dir)
    reports = {d.name.removeprefix("trial_"): read_results(d) for d in experiment.glob("trial_*")}
    return {trial_id: lines for trial_id, lines in reports.items() if lines}


def test_the_summary_reads_the_best_reports_si_sdr_and_rate_beside_its_objective(sweep):
    best = sweep["summary"]["best"]
    reports = reports_by_trial(sweep)[best["trial_id"]]
    there = [r for r in reports if r["step"] == best[BEST_STEP]][-1]
    assert there["val/mel_distance"] == best[BEST_OBJECTIVE]
    # the objective decodes the mean, so SI-SDR of the mean; values of that report, not the last
    assert best["beside"] == {"val/si_sdr": there["val/si_sdr"], "val/kl_kbps": there["val/kl_kbps"]}


def best_report(reports: list[dict]) -> dict:
    """The report with the lowest objective (mode min), the earliest on ties: computed here from
    the raw reports, independently of the code under test."""
    return min(reports, key=lambda r: (r["objective"], r["step"]))


def test_each_report_carries_the_running_best_and_its_step(sweep):
    for trial_id, reports in reports_by_trial(sweep).items():
        for index, report in enumerate(reports):
            best = best_report(reports[:index + 1])
            assert report[BEST_OBJECTIVE] == best["objective"], trial_id
            assert report[BEST_STEP] == best["step"], trial_id


def test_one_value_per_trial_in_ray_optuna_mlflow_the_report_and_the_app(sweep, tmp_path):
    reports = reports_by_trial(sweep)
    expected = {t: best_report(r)["objective"] for t, r in reports.items()}
    study = optuna.load_study(study_name="e2e", storage=sweep["summary"]["optuna_storage"])
    assert study.metric_names == [SPACE["objective"]["metric"]]
    runs = {r.data.tags[TRIAL_TAG]: r for r in sweep["runs"]}
    optuna_values = {}
    for trial in study.trials:
        ray_id = trial.user_attrs[RAY_TRIAL_ATTR]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            optuna_values[ray_id] = trial.value
        elif trial.state == optuna.trial.TrialState.PRUNED:
            optuna_values[ray_id] = trial.intermediate_values[max(trial.intermediate_values)]
        if ray_id in reports:
            assert trial.user_attrs[MLFLOW_RUN_ATTR] == runs[ray_id].info.run_id
    assert optuna_values == expected
    mlflow_values = {t: r.data.metrics[BEST_OBJECTIVE_METRIC] for t, r in runs.items()
                     if BEST_OBJECTIVE_METRIC in r.data.metrics}
    assert mlflow_values == expected
    summary = build_report(sweep["paths"], tmp_path)
    table = pd.read_csv(tmp_path / "trials.csv", dtype={"trial_id": str})
    reported = table.dropna(subset=[BEST_OBJECTIVE])
    assert dict(zip(reported.trial_id, reported[BEST_OBJECTIVE])) == pytest.approx(expected)
    assert dict(zip(reported.trial_id, reported[BEST_STEP])) == \
        {t: best_report(r)["step"] for t, r in reports.items()}
    _, trials = sweep_trials(sweep["paths"])
    assert {t.trial_id: t.value for t in trials if t.trial_id in expected} == expected
    # one order and one outcome everywhere: the report's, the app's and MLflow's
    assert list(table.trial_id) == [t.trial_id for t in trials]
    assert summary["best"]["trial_id"] == trials[0].trial_id == sweep["summary"]["best"]["trial_id"]
    assert list(table.outcome) == [t.outcome for t in trials] == \
        [runs[t.trial_id].data.tags[OUTCOME_TAG] for t in trials]
    assert {"completed", "pruned", "failed"} == set(table.outcome)
    parent = sweep["client"].get_run(sweep["summary"]["mlflow"]["parent_run_id"])
    assert parent.data.metrics[BEST_OBJECTIVE_METRIC] == min(expected.values())
    assert parent.data.tags[BEST_TRIAL_TAG] == trials[0].trial_id
    assert parent.data.tags[BEST_RUN_TAG] == runs[trials[0].trial_id].info.run_id


def test_export_takes_the_best_checkpoint_of_the_best_trial_loads_and_reconstructs(sweep, tmp_path):
    reports = reports_by_trial(sweep)
    best_id = min(reports, key=lambda t: best_report(reports[t])["objective"])
    best, last = best_report(reports[best_id]), reports[best_id][-1]
    # the case this sweep is built for: the best trial's early report beats its last one
    run = next(r for r in sweep["runs"] if r.data.tags[TRIAL_TAG] == best_id)
    assert lr_of(run) == OVERSHOOT_LR
    assert best["step"] < last["step"] and best["objective"] < last["objective"]

    result = export_best(sweep["paths"], tmp_path / "bundle", register="e2e-vae")
    bundle = load_bundle(tmp_path / "bundle")
    assert result["trial_id"] == bundle.provenance["trial_id"] == best_id
    assert bundle.provenance["checkpoint_step"] == result["step"] == best["step"]
    assert bundle.provenance["checkpoint_objective"] == bundle.metrics["objective"] == best["objective"]
    assert bundle.metrics["val/mel_distance"] == best["val/mel_distance"]
    assert bundle.provenance["mlflow_run_id"]
    # the app plays the same checkpoint
    _, trials = sweep_trials(sweep["paths"])
    assert trials[0].trial_id == best_id
    assert read_running_best(Path(trials[0].checkpoint))["step"] == best["step"]
    assert trials[0].checkpoint.startswith(str(Path(sweep["paths"].experiment_dir) / trial_dirname(best_id)))
    audio = torch.randn(1, 2, 4000) * 0.1
    with torch.no_grad():
        out = bundle.model(audio).reconstruction
    assert out.shape == audio.shape and torch.isfinite(out).all()
    # the registered champion loads through MLflow and reconstructs the same way
    from vae.inference.mlflow_model import tracking_uri_set_to

    with tracking_uri_set_to(sweep["tracking_uri"]):
        model = mlflow.pyfunc.load_model("models:/e2e-vae@champion")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaks into later tests
    np.testing.assert_allclose(model.predict(audio.numpy()), out.numpy(), atol=1e-5)


def test_the_next_commands_run_as_printed_from_another_folder(sweep, tmp_path, monkeypatch):
    """Pasted into a shell whose PATH lacks the virtualenv, in another folder, each command the
    sweep's summary prints runs (the servers only as far as --help)."""
    import importlib.util
    import subprocess
    import sys

    from sweeps.execution.summary import next_commands

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = {**sweep["summary"], "experiment_id": summary_experiment(sweep["client"], sweep["summary"])}
    commands = [c for c in next_commands(summary, sweep["paths"]) if not c.startswith("  then open")]
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    if importlib.util.find_spec("optuna_dashboard") is None:  # printed after the line installing it
        dashboard = commands.pop()
        assert dashboard.startswith(f"{Path(sys.executable).parent}/optuna-dashboard sqlite:///")
        assert commands[-1].startswith(f"{sys.executable} -m pip install 'optuna-dashboard")
    for command in commands:
        serves = " ui " in command or "optuna-dashboard" in command or " pip install " in command
        done = subprocess.run(command + (" --help" if serves else ""), shell=True, cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert (elsewhere / "best_e2e" / "model.safetensors").is_file()  # the export went where it said
    assert (sweep["paths"].report_dir / "trials.md").is_file()


# ---- MLflow's runs table says what the report says (issue 22) ----------------------------------

def test_each_child_run_carries_its_best_report_as_the_report_has_it(sweep, tmp_path):
    """The run's best/ metrics are the report's trials.csv row (the best report's), an
    ASHA-stopped trial's too; its val/ curves still end at the last report."""
    from vae.metric_table import METRICS
    from vae.metric_table import best_metric
    from vae.training.mlflow import BEST_STEP_METRIC, OBJECTIVE_FORMULA_TAG

    build_report(sweep["paths"], tmp_path)
    table = pd.read_csv(tmp_path / "trials.csv", dtype={"trial_id": str})
    runs = {r.data.tags[TRIAL_TAG]: r for r in sweep["runs"]}
    rows = table.dropna(subset=[BEST_OBJECTIVE]).to_dict("records")
    assert {"completed", "pruned"} <= {row["outcome"] for row in rows}
    for row in rows:
        metrics = runs[row["trial_id"]].data.metrics
        expected = {best_metric(m.key): row[m.key] for m in METRICS.values() if pd.notna(row[m.key])}
        expected |= {BEST_OBJECTIVE_METRIC: row[BEST_OBJECTIVE], BEST_STEP_METRIC: row[BEST_STEP]}
        assert {key: metrics.get(key) for key in expected} == pytest.approx(expected), row["trial_id"]
    assert {r.data.tags[OBJECTIVE_FORMULA_TAG] for r in sweep["runs"]} == {SPACE["objective"]["metric"]}
    # the trial this sweep is built for: its last report is not its best
    overshoot = next(r for r in sweep["runs"] if lr_of(r) == OVERSHOOT_LR).data.metrics
    assert overshoot["best/val/mel_distance"] < overshoot["val/mel_distance"]


def test_every_validations_objective_is_on_its_run(sweep):
    from vae.training.mlflow import OBJECTIVE_METRIC

    runs = {r.data.tags[TRIAL_TAG]: r for r in sweep["runs"]}
    for trial_id, reports in reports_by_trial(sweep).items():
        history = sweep["client"].get_metric_history(runs[trial_id].info.run_id, OBJECTIVE_METRIC)
        assert {m.step: m.value for m in history} == {r["step"]: r["objective"] for r in reports}


def test_the_parent_run_reads_as_its_best_trial(sweep):
    parent = sweep["client"].get_run(sweep["summary"]["mlflow"]["parent_run_id"])
    best = next(r for r in sweep["runs"] if r.info.run_id == parent.data.tags[BEST_RUN_TAG])
    best_metrics = {k: v for k, v in best.data.metrics.items() if k.startswith("best/")}
    assert len(best_metrics) > 3
    assert {k: parent.data.metrics.get(k) for k in best_metrics} == best_metrics


def test_the_printed_link_opens_a_view_of_columns_the_runs_have(sweep):
    """The link next_commands prints opens a saved view of this experiment, sorted best first
    for the sweep's mode by a metric every reported trial has, on columns its runs carry (so
    none is empty), the sweep's outcome and name among them."""
    import json
    from urllib.parse import parse_qs, urlsplit

    from sweeps.execution.summary import next_commands
    from vae.training.mlflow import SAVED_VIEW_TAG, VIEW_QUERY, runs_page

    experiment_id = summary_experiment(sweep["client"], sweep["summary"])
    url = runs_page(sweep["tracking_uri"], experiment_id, "min")
    assert f"  then open {url}" in next_commands({**sweep["summary"], "experiment_id": experiment_id},
                                                  sweep["paths"])
    route, _, query = urlsplit(url).fragment.partition("?")
    assert route == f"/experiments/{experiment_id}/runs"
    tag = SAVED_VIEW_TAG + parse_qs(query)[VIEW_QUERY][0]
    state = json.loads(json.loads(sweep["client"].get_experiment(experiment_id).tags[tag])["state"])
    assert state["orderByKey"] == f"metrics.`{BEST_OBJECTIVE_METRIC}`"
    assert state["orderByAsc"] is (SPACE["objective"]["mode"] == "min")
    reported = [r for r in sweep["runs"] if r.data.tags[TRIAL_TAG] in reports_by_trial(sweep)]
    for column in state["selectedColumns"]:
        kind, _, name = column.partition(".")
        assert all(name.strip("`") in getattr(r.data, kind) for r in reported), column
