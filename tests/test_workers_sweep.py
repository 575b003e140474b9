"""Sweeps whose trials each train on two data-parallel workers (``resources.workers: 2``: a Ray
Train TorchTrainer inside the Tune trial), with real Ray, Optuna, Lightning and MLflow.

A local sweep runs, prunes (ASHA) and records one MLflow child run per trial whose two workers
are named on it; its best trial exports like any other. A sweep whose driver is SIGKILLed resumes
with nothing lost or duplicated. On a ``ray.cluster_utils.Cluster`` of two one-CPU nodes, a
trial's two workers run on both nodes. A space asking for more workers than Ray can ever place is
refused with one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from ray._common.utils import reset_ray_address
from ray.cluster_utils import Cluster
from ray.tune import ExperimentAnalysis

from sweeps.execution.driver import run_sweep
from sweeps.results.export import export_best
from sweeps.execution.guard import UnplaceableTrial
from sweeps.layout import SweepPaths
from sweeps.space.schema import load_space
from sweeps.execution.tracking import TRIAL_TAG, child_runs, client_for
from sweeps.execution.trial_workers import WORKER_NODES_TAG
from tests.conftest import MICRO
from tests.test_resume import kill_point, kill_session
from tests.test_sweep import run_space
from vae.inference import load_bundle

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "name": "workers",
    "base": {"overrides": {**MICRO, "trainer.max_steps": 6, "trainer.val_every_steps": 2}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 1, "startup_trials": 2},
    # One trial at a time (its two workers fill the two CPUs): ASHA's decisions do not depend
    # on timing. The first trial learns; the second barely moves and is stopped at its first
    # rung; the third is the first again.
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 3,
    "max_concurrent_trials": 1,
    "resources": {"cpu": 1, "workers": 2},
    "params": {"optim.lr": {"type": "categorical", "choices": [3e-3, 1e-7]}},
    "points_to_evaluate": [{"optim.lr": 3e-3}, {"optim.lr": 1e-7}, {"optim.lr": 3e-3}],
}


def parent_and_children(tracking_uri: str) -> tuple[object, list]:
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name("audio-vae")
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    return parents[0], child_runs(client, experiment.experiment_id, parents[0].info.run_id)


def test_two_worker_trials_run_prune_and_record_one_child_each(tmp_path):
    space, paths, tracking_uri, summary = run_space(SPACE, tmp_path)
    assert summary["trials"] == {"completed": 2, "pruned": 1}
    parent, runs = parent_and_children(tracking_uri)
    analysis = ExperimentAnalysis(paths.experiment_dir)
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(t.trial_id for t in analysis.trials)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED"]
    for run in runs:  # both workers took part, and worker 0 logged the curves
        assert len(run.data.tags[WORKER_NODES_TAG].split(",")) == 2
        assert "train/loss" in run.data.metrics and "best/objective" in run.data.metrics
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{paths.state_dir}/optuna.db")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    bundle = export_best(paths, tmp_path / "bundle")
    assert load_bundle(bundle["bundle"]).config.optim.lr == 3e-3


def test_a_killed_driver_of_two_worker_trials_resumes_without_losing_or_duplicating(tmp_path):
    # one trial: a pending trial's resume is test_resume's; this is the Train run's checkpoint
    space = {**SPACE, "name": "resume_workers", "scheduler": {"type": "none"}, "num_samples": 1,
             "points_to_evaluate": [{"optim.lr": 3e-3}],
             "base": {"overrides": {**MICRO, "trainer.max_steps": 16, "trainer.val_every_steps": 2}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    command = [sys.executable, str(ROOT / "sweeps" / "run.py"), str(tmp_path / "space.yaml"),
               "--storage-path", str(tmp_path / "results"), "--tracking-uri",
               f"sqlite:///{tmp_path / 'mlflow.db'}", "--num-cpus", "2", "--no-report"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env)
    deadline = time.time() + 300
    experiment = tmp_path / "results" / "resume_workers"
    while time.time() < deadline and first.poll() is None and not kill_point(experiment, 1):
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    kill_session(first.pid)  # the driver, its local Ray, the trial and its two workers
    first.wait()

    second = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    analysis = ExperimentAnalysis(str(tmp_path / "results" / "resume_workers"))
    assert len(analysis.trials) == 1
    assert all(t.status == "TERMINATED" and t.last_result["step"] == 16 for t in analysis.trials)
    parent, runs = parent_and_children(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(t.trial_id for t in analysis.trials)
    assert all(r.info.status == "FINISHED" for r in runs)
    resumed = [r for r in runs if "resumed_from_step" in r.data.tags]
    assert resumed and all(int(r.data.tags["resumed_from_step"]) > 0 for r in resumed)
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in resumed:  # it went on from its checkpoint: the history starts at the first report
        steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "val/mel_distance")})
        assert steps == list(range(2, 17, 2))


@pytest.fixture
def two_node_cluster():
    """A head that takes no work, with the state API (Ray Train frees stopped trials through
    it), and two nodes of one CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    reset_ray_address()  # no other Ray user on this machine joins it
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_two_worker_trial_spans_both_nodes_of_a_cluster(tmp_path, two_node_cluster):
    raw = {**SPACE, "name": "spans", "scheduler": {"type": "none"}, "num_samples": 1,
           "points_to_evaluate": [{"optim.lr": 3e-3}]}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    paths = SweepPaths(str(tmp_path / "shared"), "spans")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_sweep(load_space(tmp_path / "space.yaml"), paths, tracking_uri=tracking_uri,
                        address=two_node_cluster.address)
    assert summary["trials"] == {"completed": 1}
    _, (run,) = parent_and_children(tracking_uri)
    nodes = run.data.tags[WORKER_NODES_TAG].split(",")
    workers = {node.node_id for node in two_node_cluster.worker_nodes}
    assert len(nodes) == 2 and set(nodes) == workers  # one worker on each node

    # Three one-CPU workers never fit on two one-CPU nodes: refused before any run is opened.
    (tmp_path / "three.yaml").write_text(yaml.safe_dump({**raw, "name": "three",
                                                         "resources": {"cpu": 1, "workers": 3}}))
    with pytest.raises(UnplaceableTrial, match="3 worker.* can place 2"):
        run_sweep(load_space(tmp_path / "three.yaml"), SweepPaths(str(tmp_path / "shared"), "three"),
                  tracking_uri=tracking_uri, address=two_node_cluster.address)
    assert not (tmp_path / "shared" / "three").exists()


def test_more_workers_than_the_local_cores_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**SPACE, "resources": {"cpu": 1, "workers": 3}}))
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(tmp_path / "space.yaml"),
                           "--storage-path", str(tmp_path / "results"), "--num-cpus", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "resources.workers: 3 CPUs per trial (3 workers x 1), but the local Ray has 2" in done.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_space_setting_trainer_devices_is_refused(tmp_path):
    raw = {**SPACE, "base": {"overrides": {**MICRO, "trainer.devices": 2}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), str(tmp_path / "space.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "base.overrides.trainer.devices: a trial's data-parallel processes are set by " \
           "resources.workers" in done.stderr
