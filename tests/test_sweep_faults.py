"""Faults around a sweep, with real Ray, Optuna and MLflow: unsafe names, an unwritable storage, an
unreachable tracking server, a second driver for the same sweep, Ctrl-C then --resume, and a
tracking store that breaks mid-sweep."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from sweeps.execution.guard import driver_lock
from sweeps.layout import DRIVER_LOCK, SweepPaths
from sweeps.run import main
from vae.cli.common import writable_problem
from tests.conftest import MICRO
from tests.test_resume import kill_session

ROOT = Path(__file__).resolve().parents[1]


def space(name: str, steps: int, samples: int, concurrent: int, every: int = 4) -> dict:
    return {
        "name": name,
        "base": {"overrides": {**MICRO, "trainer.max_steps": steps, "trainer.val_every_steps": every}},
        "objective": {"metric": "val/mel_distance", "mode": "min"},
        "searcher": {"sampler": "random", "seed": 0},
        "scheduler": {"type": "none"},
        "num_samples": samples, "max_concurrent_trials": concurrent, "resources": {"cpu": 1},
        "params": {"loss.kl.weight": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
    }


@pytest.fixture
def space_file(tmp_path) -> Path:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space("faults", 160, 2, 2, 20)))
    return tmp_path / "space.yaml"


def cli(space_file: Path, *extra: str) -> list[str]:
    root = space_file.parent
    return [str(space_file), "--storage-path", str(root / "results"), "--tracking-uri",
            f"sqlite:///{root / 'mlflow.db'}", "--num-cpus", "2", "--no-report", *extra]


# ---- refused before anything starts --------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "..", "a" * 300, "a/b", ".hidden"])
def test_unsafe_sweep_names_are_refused_and_nothing_is_created(space_file, name, capsys):
    assert main(cli(space_file, "--name", name)) == 2
    assert "sweep name" in capsys.readouterr().err
    assert sorted(p.name for p in space_file.parent.iterdir()) == ["space.yaml"]


def test_unwritable_storage_fails_before_ray_starts(space_file, capsys):
    import ray

    blocker = space_file.parent / "a_file"
    blocker.write_text("not a folder")
    assert main([*cli(space_file), "--storage-path", str(blocker / "results")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_unreachable_tracking_server_fails_within_seconds(space_file, capsys):
    import ray

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        code = main([*cli(space_file), "--tracking-uri",
                     f"http://127.0.0.1:{silent.getsockname()[1]}"])
    assert code == 2 and time.monotonic() - start < 10
    assert "MLflow tracking server" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_a_dead_drivers_lock_is_taken_over(tmp_path):
    paths = SweepPaths(str(tmp_path), "s")
    paths.state_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (paths.state_dir / DRIVER_LOCK).write_text(json.dumps({"pid": int(dead), "host": "h"}))
    with driver_lock(paths) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


# ---- Ctrl-C, a second driver, --resume -----------------------------------------------------------

def sweep_process(space_file: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "run.py"), *cli(space_file, *extra)],
                            cwd=space_file.parent, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_checkpoints(root: Path, process: subprocess.Popen, trials: int, log: Path) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        dirs = {p.parent for p in (root / "results" / "faults").glob("trial_*/checkpoint_*")}
        if len(dirs) >= trials:
            return
        time.sleep(0.5)
    raise AssertionError(log.read_text()[-3000:])


@pytest.mark.slow
def test_ctrl_c_is_a_resumable_interruption_and_one_driver_runs_a_sweep(space_file):
    root = space_file.parent
    first = sweep_process(space_file, root / "first.log")
    try:
        wait_for_checkpoints(root, first, 2, root / "first.log")
        second = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"), *cli(space_file)],
                                capture_output=True, text=True, timeout=120, cwd=root)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"already being run by pid {first.pid}" in second.stderr
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
        assert first.wait(timeout=180) == 130, (root / "first.log").read_text()[-3000:]
    finally:
        kill_session(first.pid)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("audio-vae").experiment_id
    parent = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    storage = f"sqlite:///{root / 'results' / 'faults' / 'optuna.db'}"
    states = [t.state for t in optuna.load_study(study_name="faults", storage=storage).trials]
    assert optuna.trial.TrialState.FAIL not in states and optuna.trial.TrialState.RUNNING in states

    resumed = subprocess.run([sys.executable, str(ROOT / "sweeps" / "run.py"),
                              *cli(space_file, "--resume")], capture_output=True, text=True,
                             timeout=600, cwd=root)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(root / "results" / "faults"))
    real = {t.trial_id: t.last_result["best_objective"] for t in analysis.trials}
    study = optuna.load_study(study_name="faults", storage=storage)
    told = {t.user_attrs["ray_trial_id"]: t.value for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE}
    assert told == pytest.approx(real) and len(told) == 2  # their real results, after --resume
    assert client.get_run(parent[0].info.run_id).info.status == "FINISHED"


# ---- the tracking store breaks mid-sweep ---------------------------------------------------------

@pytest.mark.slow
def test_a_broken_tracking_store_is_one_line_per_trial_and_the_sweep_goes_on(tmp_path, caplog):
    import ray
    from ray import tune

    from sweeps.execution.driver import run_sweep
    from sweeps.space.schema import load_space

    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space("broken", 4, 2, 1)))
    database = tmp_path / "mlflow.db"

    class BreakStore(tune.Callback):
        """Overwrites the MLflow database in place at the first result (as a disk fault would)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if database.read_bytes()[:6] == b"SQLite":
                database.write_bytes(b"\0garbage" * 4096)

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with caplog.at_level(logging.WARNING):
            summary = run_sweep(load_space(tmp_path / "space.yaml"),
                                SweepPaths(str(tmp_path / "results"), "broken"),
                                tracking_uri=f"sqlite:///{database}", report=False,
                                extra_callbacks=[BreakStore()])
    finally:
        ray.shutdown()
    assert summary["sweep"] == "broken"
    ids = sorted(p.name.removeprefix("trial_") for p in (tmp_path / "results" / "broken").glob("trial_*"))
    assert len(ids) == 2
    # The driver's lines (each trial's own comes from its worker: tests/test_tracking_outage.py):
    # one as trials end, one at the sweep's end naming the runs left RUNNING.
    lines = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(lines) == 2 and summary["mlflow"]["parent_run_id"] in lines[1], lines
    assert all("\n" not in line for line in lines)


def test_resume_of_a_sweep_never_started_creates_nothing(space_file, capsys):
    assert main(cli(space_file, "--resume")) == 2
    assert f"--resume: no sweep to resume at {space_file.parent / 'results' / 'faults'}" in \
        capsys.readouterr().err
    assert sorted(p.name for p in space_file.parent.iterdir()) == ["space.yaml"]


def test_an_unsafe_name_in_the_space_file_names_the_file_and_key(space_file, capsys):
    space_file.write_text(yaml.safe_dump({**space("faults", 160, 2, 2, 20), "name": ".."}))
    assert main(cli(space_file)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {space_file}: ") and "name: Value error, sweep name '..'" in err
    assert sorted(p.name for p in space_file.parent.iterdir()) == ["space.yaml"]


def test_writable_problem_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    assert writable_problem("-o", tmp_path / "new" / "deeper") is None
    assert writable_problem("-o", tmp_path / "file") == f"-o {tmp_path / 'file'}: not writable " \
        "(a file, not a folder)"
    assert writable_problem("-o", tmp_path / "file" / "a" / "b") == \
        f"-o {tmp_path / 'file' / 'a' / 'b'}: not writable ({tmp_path / 'file'} is a file, not a folder)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
