"""A sweep on a real multi-node Ray cluster survives the loss of a worker node.

Everything is real and local, no mocks: a Ray cluster of three raylets on this machine
(``ray.cluster_utils.Cluster``) whose head takes no trials (0 CPUs, 0 GPUs) and whose two
workers declare 1 CPU and 1 GPU each; a ``mlflow server`` subprocess (sqlite store, artifacts
proxied to a local folder); a results directory all nodes see (one machine, so a tmp dir is
the shared storage); and the driver run as ``python sweeps/run.py ... --address HEAD``, as on
the head of a real cluster.

Each trial asks for ``{cpu: 1, gpu: 0.5}``. The GPUs are only declared: Ray assigns them
(``ray.get_gpu_ids()`` is non-empty) but torch has no CUDA here, so the trials must train on
the CPU. One CPU per worker means one trial per worker, so the two concurrent trials are
necessarily on different workers, which the test checks from the ``ray.node_id`` tag each
trial sets on its MLflow run.

Once both workers run a trial and one trial has written its third checkpoint (so the driver
holds the second) with at least three reports still to come, its worker is killed without
warning (``remove_node(allow_graceful=False)``: the node's Ray processes are SIGKILLed and the
trial's process dies with them, like on a reclaimed spot instance). ``max_failures: 1`` lets
Tune retry the lost trial, from its last checkpoint (MLflow tag ``resumed_from_step``). No replacement node is added: the retry, and the trial not
yet started, wait for the surviving worker's slot, so the sweep finishes on reduced capacity.
On AWS the autoscaler of ``cluster/cluster.yaml`` would also launch a worker for the pending
trial; that is not needed for correctness and is left out (a cold worker here would only
compete for this machine's CPUs). Ray's node health checks are tightened on the head so the
dead node is noticed in about 3 s instead of 15-30 s.

At the end: every trial TERMINATED at ``max_steps``, only the interrupted one with a failure on
record; one MLflow child run per trial (none lost, none duplicated, none RUNNING, all
FINISHED) with the parent FINISHED; the retried trial's metric history without a gap; every
Optuna trial COMPLETE.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from ray._common.utils import reset_ray_address
from ray.cluster_utils import Cluster
from ray.tune import ExperimentAnalysis

from sweeps.layout import CHECKPOINT_DIR_GLOB, STATE_DIR_ENV, SweepPaths, load_state, trial_dirname
from sweeps.execution.tracking import OUTCOME_TAG, TRIAL_TAG, client_for, reachable_tracking_uri
from sweeps.execution.trial import NODE_TAG
from tests.conftest import MICRO

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

NAME = "cluster"
NUM_SAMPLES = 3
MAX_STEPS, VAL_EVERY = 40, 4  # 10 reports (and checkpoints) per trial
TRIAL_RESOURCES = {"cpu": 1, "gpu": 0.5}
WORKER = {"num_cpus": 1, "num_gpus": 1}  # room for one trial at a time
SPACE = {
    "name": NAME,
    "base": {"overrides": {**MICRO, "trainer.max_steps": MAX_STEPS,
                           "trainer.val_every_steps": VAL_EVERY,
                           "tracking.log_checkpoint": False}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 0, "startup_trials": 2},
    "scheduler": {"type": "none"},  # every trial runs to max_steps: no timing-dependent pruning
    "num_samples": NUM_SAMPLES,
    "max_concurrent_trials": 2,
    "max_failures": 1,  # a trial lost with its node is retried once, from its checkpoint
    "resources": TRIAL_RESOURCES,
    "params": {"loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
}
# Faster node-death detection than Ray's defaults (about 15-30 s) to keep the test short.
HEAD_SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                      "health_check_timeout_ms": 5000, "health_check_failure_threshold": 3}
DEADLINE_S = 420


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


@pytest.fixture
def mlflow_process(tmp_path):
    """``mlflow server`` on a free port: sqlite store, artifacts proxied to a local folder. It
    listens on every interface because trials on other nodes reach it at the driver node's IP
    (``reachable_tracking_uri``), and admits that Host header (MLflow's default admits only
    localhost and the private ranges). Started first, so it boots while the cluster does."""
    port = free_port()
    root = tmp_path / "mlflow"
    root.mkdir()
    log = root / "server.log"
    # the IP the cluster's nodes will advertise: Ray's own choice, as in Cluster.add_node
    hosts = ("127.0.0.1", "localhost", ray.util.get_node_ip_address())
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "0.0.0.0", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
             "--allowed-hosts", ",".join(f"{host}:{port}" for host in hosts)],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield server, f"http://127.0.0.1:{port}", log, hosts
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture
def cluster(mlflow_process):
    """Head (no CPUs, no GPUs: it takes no trials) plus two workers that declare a GPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "gcs_server_port": free_port(), "include_dashboard": False,
        "_system_config": HEAD_SYSTEM_CONFIG})
    # Cluster() records its address for ray.init() without one; forget it, so that no other Ray
    # user on this machine joins this cluster (the driver here is given the address).
    reset_ray_address()
    try:
        for _ in range(2):
            cluster.add_node(**WORKER)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def mlflow_server(mlflow_process, cluster):
    """The tracking URI once the server answers /health."""
    server, uri, log, hosts = mlflow_process
    assert cluster.head_node.node_ip_address in hosts
    deadline = time.time() + 120
    while True:
        assert server.poll() is None, f"mlflow server exited:\n{tail(log)}"
        assert time.time() < deadline, f"mlflow server not healthy after 120 s:\n{tail(log)}"
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.5)
    return uri


def sweep_command(root: Path, address: str, tracking_uri: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "run.py"), str(root / "space.yaml"),
            "--address", address, "--storage-path", str(root / "shared"),
            "--tracking-uri", tracking_uri, "--no-report"]


def checkpoint_indices(root: Path, trial_id: str) -> list[int]:
    """Checkpoints Tune has persisted to the shared storage for a trial (at most num_to_keep)."""
    trial_dir = root / "shared" / NAME / trial_dirname(trial_id)
    return sorted(int(p.name.rsplit("_", 1)[1]) for p in trial_dir.glob(CHECKPOINT_DIR_GLOB))


def test_node_loss_mid_sweep_retries_the_trial_from_its_checkpoint(tmp_path, cluster,
                                                                   mlflow_server):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    client = client_for(mlflow_server)
    head_id = cluster.head_node.node_id
    first_workers = {node.node_id: node for node in cluster.worker_nodes}
    log_path = tmp_path / "driver.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(STATE_DIR_ENV, None)  # driver-side state beside the results, where it is read
    with open(log_path, "w") as log:
        driver = subprocess.Popen(sweep_command(tmp_path, cluster.address, mlflow_server),
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=env)
    nodes_seen: dict[str, list[str]] = {}  # trial id -> the nodes its attempts ran on, in order

    def observe() -> list:
        experiment = client.get_experiment_by_name("audio-vae")
        if experiment is None:
            return []
        runs = [r for r in client.search_runs([experiment.experiment_id], max_results=100)
                if TRIAL_TAG in r.data.tags]
        for run in runs:
            node = run.data.tags.get(NODE_TAG)
            seen = nodes_seen.setdefault(run.data.tags[TRIAL_TAG], [])
            if node and (not seen or seen[-1] != node):
                seen.append(node)
        return runs

    try:
        deadline = time.time() + DEADLINE_S
        victim = None  # (trial id, node, step it can resume from at least) to kill
        while victim is None:
            assert driver.poll() is None, f"the sweep ended before the kill:\n{tail(log_path)}"
            assert time.time() < deadline, f"no trial to interrupt in time:\n{tail(log_path)}"
            running = {r.data.tags[TRIAL_TAG]: r.data.tags[NODE_TAG] for r in observe()
                       if r.info.status == "RUNNING" and r.data.tags.get(NODE_TAG) in first_workers}
            if set(running.values()) == set(first_workers):
                for trial_id, node in running.items():
                    last = (checkpoint_indices(tmp_path, trial_id) or [-1])[-1]
                    # A trial writes checkpoint k only after the driver took report k-1 (and its
                    # checkpoint): k >= 2 means the driver holds step 8 or later; k <= 6 leaves
                    # at least three reports to come.
                    if 2 <= last <= MAX_STEPS // VAL_EVERY - 4:
                        victim = trial_id, node, last * VAL_EVERY
                        break
            time.sleep(0.25)
        victim_id, killed_node, held_step = victim
        cluster.remove_node(first_workers[killed_node], allow_graceful=False)

        while driver.poll() is None:
            assert time.time() < deadline, f"the sweep did not finish in time:\n{tail(log_path)}"
            observe()
            time.sleep(0.5)
        assert driver.returncode == 0, tail(log_path)
        observe()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    # --- Tune: every trial finished, only the interrupted one failed (once) and was retried
    analysis = ExperimentAnalysis(str(tmp_path / "shared" / NAME))
    trials = {t.trial_id: t for t in analysis.trials}
    assert len(trials) == NUM_SAMPLES and victim_id in trials
    assert all(t.status == "TERMINATED" for t in trials.values())
    assert all(t.last_result["step"] == MAX_STEPS for t in trials.values())
    assert {tid: t.num_failures for tid, t in trials.items()} == \
        {tid: int(tid == victim_id) for tid in trials}
    assert all(t.placement_group_factory.required_resources == {"CPU": 1.0, "GPU": 0.5}
               for t in trials.values())

    # --- placement: both workers ran trials, never the head; the retry left the dead node
    assert set(nodes_seen) == set(trials)
    assert set(first_workers) <= {node for seen in nodes_seen.values() for node in seen}
    assert all(head_id not in seen for seen in nodes_seen.values())
    assert nodes_seen[victim_id][0] == killed_node and nodes_seen[victim_id][-1] != killed_node

    # --- MLflow: one child run per trial, none lost or duplicated, none left RUNNING
    experiment = client.get_experiment_by_name("audio-vae")
    all_runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(runs) == len(all_runs) - 1
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(trials)
    assert all(r.info.status == "FINISHED" and r.data.tags[OUTCOME_TAG] == "completed"
               for r in runs)
    # the trials reached the server through the driver node's address, and trained on the CPU
    # although Ray had assigned them (declared) GPUs
    trial_uri = reachable_tracking_uri(mlflow_server, cluster.head_node.node_ip_address)
    assert all(r.data.params["tracking.tracking_uri"] == trial_uri for r in runs)
    assert all(r.data.params["trainer.accelerator"] == "cpu" for r in runs)
    # artifacts went through the server (--serve-artifacts) into its own destination
    artifacts = tmp_path / "mlflow" / "artifacts"
    assert all(list(artifacts.glob(f"*/{r.info.run_id}/artifacts/audio/*/*.wav")) for r in runs)

    # --- the interrupted trial resumed from its checkpoint; no other trial restarted
    by_trial = {r.data.tags[TRIAL_TAG]: r for r in runs}
    resumed = {tid for tid, r in by_trial.items() if "resumed_from_step" in r.data.tags}
    assert resumed == {victim_id}
    resumed_from = int(by_trial[victim_id].data.tags["resumed_from_step"])
    assert held_step <= resumed_from < MAX_STEPS and resumed_from % VAL_EVERY == 0
    history = client.get_metric_history(by_trial[victim_id].info.run_id, "val/mel_distance")
    steps = sorted({m.step for m in history})
    assert steps == list(range(VAL_EVERY, MAX_STEPS + 1, VAL_EVERY))  # no gap across the restart

    # --- Optuna saw every trial complete
    paths = SweepPaths(str(tmp_path / "shared"), NAME)
    assert load_state(paths.state_dir)["parent_run_id"] == parents[0].info.run_id
    study = optuna.load_study(study_name=NAME, storage=paths.optuna_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * NUM_SAMPLES
