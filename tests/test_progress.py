"""The sweep's live view and end summary (sweeps/execution/progress.py) on real Ray Tune
``Trial`` objects and a real search space, and vae-train's closing table: what a person reads,
checked cell by cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from sweeps.layout import SweepPaths
from sweeps.execution.progress import (SweepReporter, SweepView, describe_space, progress_line,
                                       trial_rows, trial_state)
from sweeps.execution.summary import end_summary, next_commands
from sweeps.space.schema import load_space
from vae.cli.train import final_report
from vae.training.mlflow import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, default_artifact_location,
                                 ensure_experiment)
from vae.training.train import TrainResult

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
# (status, iterations reported, best objective): max_t of the smoke space is 6 validations.
TRIALS = {"done": ("TERMINATED", 6, 3.5), "stopped": ("TERMINATED", 2, 3.1),
          "broken": ("ERROR", 1, 1.0), "busy": ("RUNNING", 1, 4.0), "queued": ("PENDING", 0, None)}


@pytest.fixture(scope="module")
def space():
    return load_space(SMOKE)


def make_trial(trial_id: str, status: str, iterations: int, best: float | None) -> Trial:
    trial = Trial("run_trial", config={"loss.kl.weight": 1e-4, "loss.kl.free_bits": 0.25,
                                       "optim.lr": 3e-4}, trial_id=trial_id, stub=True)
    trial.set_status(status)
    if iterations:
        trial.update_last_result({"training_iteration": iterations, "step": 20 * iterations,
                                  "objective": best + 0.5, "best_objective": best,
                                  "best_step": 20})
    return trial


@pytest.fixture()
def trials():
    return [make_trial(trial_id, *spec) for trial_id, spec in TRIALS.items()]


def test_view_names_the_searcher_scheduler_and_searched_parameters(space):
    view = SweepView.of(space)
    assert view.searcher == "Optuna TPE (seed 0; the first 4 trials random)"
    assert view.scheduler == "ASHA on training_iteration: max_t 6, grace 1, reduction factor 2"
    assert view.params == ("loss.kl.weight", "loss.kl.free_bits", "optim.lr")
    assert (view.objective, view.mode, view.total) == ("val/mel_distance_sampled", "min", 8)


def test_states_follow_the_outcome_rule_and_rows_rank_like_the_report(space, trials):
    view = SweepView.of(space)
    states = {t.trial_id: trial_state(t, view) for t in trials}
    assert states == {"done": "completed", "stopped": "pruned", "broken": "failed",
                      "busy": "running", "queued": "pending"}
    reporter = SweepReporter(view)
    rows = trial_rows(trials, view, reporter._parameter_columns, reporter._metric_columns)
    # best first by best objective; the failed trial (best 1.0) and the unreported one last
    assert [row["trial"] for row in rows] == ["run_trial_stopped", "run_trial_done",
                                              "run_trial_busy", "run_trial_broken",
                                              "run_trial_queued"]
    # the smoke space's constraint: the ranked scalar beside the metrics it is made of
    assert list(rows[0]) == ["trial", "state", "kl.weight", "kl.free_bits", "optim.lr", "iter", "step",
                             "mel_distance_sampled", "si_sdr_sampled", "objective", "best objective"]
    assert rows[0]["state"] == "pruned" and rows[0]["best objective"] == "3.1" and rows[0]["iter"] == 2
    # a report outside the constraint: its violation, not the 10^6 it ranks by
    trials[0].update_last_result({"objective": 1e6 + 2.5, "best_objective": 1e6 + 0.25})
    busy = next(row for row in trial_rows(trials, view, reporter._parameter_columns,
                                          reporter._metric_columns) if row["trial"] == "run_trial_done")
    assert (busy["objective"], busy["best objective"]) == ("outside by 2.5", "outside by 0.25")
    trials[1].update_last_result({"objective": 3.14159265358979})
    reporter.setup(total_samples=8)
    table = reporter._progress_str(trials, False)
    assert "outside by 2.5" in table and "3.142" in table and "3.14159" not in table  # 4 digits


def test_report_text_counts_trials_and_names_the_best(space, trials):
    reporter = SweepReporter(SweepView.of(space))
    reporter.setup(total_samples=8)
    text = reporter._progress_str(trials, False, "Using AsyncHyperBand: num_stopped=1",
                                  "Logical resource usage: 2.0/2 CPUs, 0/0 GPUs")
    lines = text.splitlines()
    assert lines[0] == ("== sweep smoke: objective (val/mel_distance_sampled where "
                        "val/si_sdr_sampled >= 0) (min) ==")
    assert "Optuna TPE" in lines[1] and "ASHA" in lines[1]
    assert lines[2].startswith("3 of 8 trials done (1 completed, 1 pruned, 1 failed) · "
                               "1 running · 4 pending · elapsed ")
    assert "AsyncHyperBand" not in text and "2.0/2 CPUs" in text
    assert ("best so far: run_trial_stopped objective (val/mel_distance_sampled where "
            "val/si_sdr_sampled >= 0) 3.1 at step 20") in text


def test_progress_line_estimates_from_finished_trials():
    from collections import Counter

    line = progress_line(Counter(completed=1, pruned=1, running=2), total=8, elapsed=120)
    assert line == ("2 of 8 trials done (1 completed, 1 pruned, 0 failed) · 2 running · "
                    "4 pending · elapsed 2m00s · about 6m00s left")
    assert "left" not in progress_line(Counter(running=2), total=8, elapsed=10)


def test_end_summary_gives_the_best_and_the_next_commands(space, tmp_path):
    paths = SweepPaths(str(tmp_path), "smoke")
    summary = {"sweep": "smoke", "trials": {"completed": 3, "pruned": 5}, "experiment_id": "7",
               "mlflow": {"tracking_uri": "sqlite:////data/mlflow.db", "parent_run_id": "p"},
               "best": {"trial_id": "abc", "best_objective": 3.419, "best_step": 40,
                        "config": {"optim.lr": 0.0026},
                        "beside": {"val/si_sdr_sampled": 6.854, "val/kl_kbps": 34.23}},
               "report": str(tmp_path / "smoke" / "report")}
    text = end_summary(summary, paths, space)
    assert text.startswith("Sweep smoke finished: 8 trials, 3 completed, 5 pruned, 0 failed")
    assert ("Best: trial_abc  objective (val/mel_distance_sampled where val/si_sdr_sampled >= 0) "
            "3.419 at step 40 (there: val/si_sdr_sampled 6.854 dB, val/kl_kbps 34.23 kbit/s)") in text
    # no trial met the constraint: the closest is named as such, not by a value 10^6 away
    outside = end_summary({**summary, "best": {**summary["best"], "best_objective": 1e6 + 2.5}},
                          paths, space)
    assert "outside the constraints by 2.5 at step 40" in outside
    # a mel distance alone cannot tell a reconstruction from a hum: SI-SDR of the same decoding
    assert SweepView.of(space).beside_objective() == ("val/si_sdr_sampled", "val/kl_kbps")
    venv = Path(sys.executable).parent
    commands = next_commands(summary, paths)
    assert commands[:4] == [
        f"{venv}/sweep-report smoke --storage-path {tmp_path}",
        f"{venv}/sweep-export smoke -o {Path.cwd()}/best_smoke --storage-path {tmp_path}",
        f"{venv}/mlflow ui --backend-store-uri sqlite:////data/mlflow.db",
        "  then open http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=trials-lowest-objective-first"]
    assert commands[-1].endswith(f"optuna-dashboard sqlite:///{tmp_path}/smoke/optuna.db")
    assert all(command in text for command in commands)


def test_space_description_lists_every_parameter(space):
    note = describe_space(space)
    assert note.startswith("**smoke**: tiny model")
    for name in space.spec.params:
        assert f"`{name}`" in note
    assert "float: low=1e-06, high=0.1, log=True" in note


def test_vae_train_ends_with_a_readable_table(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, "exp", default_artifact_location(uri))
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(experiment_id).artifact_location == \
        (tmp_path / "mlartifacts").as_uri()  # beside the store, as a sweep's
    run_id = client.create_run(experiment_id).info.run_id
    result = TrainResult(metrics={"val/si_sdr": -3.21, "val/mel_distance": 1.2345},
                         best_checkpoint=None, last_checkpoint="/runs/x/last.ckpt",
                         mlflow_run_id=run_id, global_step=40)
    lines = final_report(result, uri).splitlines()
    assert lines[0] == "Final validation at step 40:"
    assert lines[3].split() == ["val/mel_distance", "1.234", "lower"]  # the metric table's order
    assert lines[4].split() == ["val/si_sdr", "-3.21", "dB", "higher"]
    assert f"  {Path(sys.executable).parent}/mlflow ui --backend-store-uri {uri}" in lines
    assert lines[-1] == \
        f"  http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"


def test_a_rate_penalised_objective_is_labelled_as_one_beside_its_parts(trials):
    """With a rate budget the objective is not the distortion: the live view, the best line and
    the summary say so, and show the distortion and the rate under their own names."""
    view = SweepView.of(load_space(SMOKE.with_name("kl.yaml")))
    assert view.ranked_by == ("objective (val/mel_distance_sampled + 0.5 per kbps of val/kl_kbps "
                              "over 6)")
    trials[0].update_last_result({"val/mel_distance_sampled": 3.0, "val/kl_kbps": 7.0})
    reporter = SweepReporter(view)
    reporter.setup(total_samples=48)
    lines = reporter._progress_str(trials, False).splitlines()
    assert lines[0] == f"== sweep kl: {view.ranked_by} (min) =="
    header = next(line for line in lines if line.startswith("| trial"))
    assert [c.strip() for c in header.strip("|").split("|")][-6:] == [
        "iter", "step", "mel_distance_sampled", "kbps", "objective", "best objective"]
    assert any(line.startswith(f"best so far: run_trial_stopped {view.ranked_by} ") for line in lines)
