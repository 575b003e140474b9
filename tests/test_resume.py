"""A sweep whose driver is SIGKILLed mid-way and resumed with --resume ends with exactly
num_samples trials, the interrupted ones resumed from their checkpoints, and no duplicate or
RUNNING MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from sweeps.execution.tracking import TRIAL_TAG, child_runs, client_for
from tests.conftest import MICRO

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 4
SPACE = {
    "name": "resume",
    "base": {"overrides": {**MICRO, "trainer.max_steps": 24, "trainer.val_every_steps": 4}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 0, "startup_trials": 2},
    "scheduler": {"type": "none"},
    "num_samples": NUM_SAMPLES,
    "max_concurrent_trials": 2,
    "resources": {"cpu": 1},
    "params": {"loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
}


def sweep_command(root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "run.py"), str(root / "space.yaml"),
            "--storage-path", str(root / "results"), "--tracking-uri",
            f"sqlite:///{root / 'mlflow.db'}", "--num-cpus", "2", "--no-report", *extra]


def kill_point(experiment: Path, trials: int) -> bool:
    """``trials`` trials under way, one past its first checkpoint, and Tune's experiment state
    written after their newest checkpoint. Not a moment earlier: Tune deletes a trial's previous
    checkpoint a moment before it records the new one in that state, and a kill in between
    leaves the state naming a deleted checkpoint (Ray Tune's own race; README, "Resuming after a SIGKILL")."""
    found = list(experiment.glob("trial_*/checkpoint_*"))
    by_trial = {p.parent for p in found}
    states = list(experiment.glob("experiment_state-*.json"))
    if len(by_trial) < trials or len(found) != len(by_trial) or not states:
        return False  # or a trial between writing its new checkpoint and deleting its old one
    try:
        written = max(p.stat().st_mtime for p in states)
        newest = max(p.stat().st_mtime for p in found)
    except FileNotFoundError:  # deleted while looked at
        return False
    return written > newest and any(not p.name.endswith("000000") for p in found)


def kill_session(session_id: int) -> None:
    """SIGKILL every process of a session (Ray's workers have their own process groups)."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        pid, sid = map(int, line.split())
        if sid == session_id:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigkilled_driver_resumes_without_losing_or_duplicating(tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(sweep_command(tmp_path), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
    deadline = time.time() + 300
    # Kill once two trials are under way with checkpoints, before any could finish.
    while time.time() < deadline and first.poll() is None and not kill_point(tmp_path / "results" / "resume", 2):
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    kill_session(first.pid)  # the driver and the local Ray it started, nothing else
    first.wait()

    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    running_before = [r for r in client.search_runs(
        [client.get_experiment_by_name("audio-vae").experiment_id]) if r.info.status == "RUNNING"]
    assert running_before  # the kill left runs RUNNING: resume must repair them

    second = subprocess.run(sweep_command(tmp_path, "--resume"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(tmp_path / "results" / "resume"))
    assert len(analysis.trials) == NUM_SAMPLES
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert all(t.last_result["step"] == 24 for t in analysis.trials)

    experiment = client.get_experiment_by_name("audio-vae")
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = child_runs(client, experiment.experiment_id, parents[0].info.run_id)
    trial_ids = sorted(r.data.tags[TRIAL_TAG] for r in runs)
    assert trial_ids == sorted(t.trial_id for t in analysis.trials)  # none lost, none duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
    resumed = [r for r in runs if "resumed_from_step" in r.data.tags]
    assert resumed and all(int(r.data.tags["resumed_from_step"]) > 0 for r in resumed)
    # a resumed trial's metric history continues from its checkpoint instead of starting again
    for run in resumed:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/mel_distance")]
        assert max(steps) == 24 and min(steps) == 4
        # the running best travelled in the checkpoint: after the resume it still counts the
        # reports from before it (never worse than they were)
        resumed_at = int(run.data.tags["resumed_from_step"])
        before = [m.value for m in client.get_metric_history(run.info.run_id, "val/mel_distance")
                  if m.step <= resumed_at]
        best = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                            "best/objective"))
        after = [value for step, value in best if step > resumed_at]
        assert after or resumed_at == 24  # resumed from its last checkpoint: nothing left to run
        assert all(value <= min(before) for value in after)

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path}/results/resume/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == NUM_SAMPLES
