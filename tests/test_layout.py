"""sweeps/layout.py: where a sweep's storage is (the same in every command), its state file, the
ranking rule, and reading trials from the files Ray Tune writes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.results import export, report
from sweeps.layout import (CHECKPOINT_FILE, DEFAULT_STORAGE, RUNNING_BEST_FILE, STATE_DIR_ENV,
                           STORAGE_ENV, LayoutError, SweepPaths, load_state, objective_mode,
                           ranked, record_outcomes, resolve_storage, trial_dirname, trial_value,
                           update_state)
from sweeps.results.records import list_sweeps, sweep_trials

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)


# ---- storage resolution --------------------------------------------------------------------------

def test_storage_flag_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(None) == str(tmp_path / DEFAULT_STORAGE)
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "from_env"))
    assert resolve_storage(None) == str(tmp_path / "from_env")
    assert resolve_storage("flag") == str(tmp_path / "flag")  # relative made absolute
    assert resolve_storage("s3://bucket/sweeps") == "s3://bucket/sweeps"  # a URI kept as it is
    paths = SweepPaths.resolve(None, "kl")
    assert paths.experiment_dir == str(tmp_path / "from_env" / "kl")
    assert paths.state_file == tmp_path / "from_env" / "kl" / "sweep.json"


def test_state_dir_beside_local_results_else_state_dir_env_else_home(tmp_path, monkeypatch):
    assert SweepPaths(str(tmp_path), "a").state_dir == tmp_path / "a"
    remote = SweepPaths("s3://bucket/x", "a")
    assert remote.state_dir == Path("~/sweep_state/a").expanduser()
    assert remote.optuna_url == f"sqlite:///{Path('~/sweep_state/a/optuna.db').expanduser()}"
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    assert remote.state_dir == SweepPaths(str(tmp_path), "a").state_dir == tmp_path / "state" / "a"
    with pytest.raises(LayoutError, match="s3://bucket/x: expected local"):
        remote.local_experiment_dir()


@pytest.mark.parametrize("command", [["report.py", "kl"], ["export.py", "kl", "-o", "bundle"]])
def test_report_and_export_honour_the_storage_flag_and_environment(command, tmp_path, monkeypatch,
                                                                   capsys):
    main = {"report.py": report.main, "export.py": export.main}[command[0]]
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "env_storage"))
    assert main(command[1:]) == 2
    assert f"{tmp_path / 'env_storage' / 'kl' / 'sweep.json'}: no sweep state" in capsys.readouterr().err
    assert main([*command[1:], "--storage-path", str(tmp_path / "flag")]) == 2
    assert f"{tmp_path / 'flag' / 'kl' / 'sweep.json'}" in capsys.readouterr().err


@pytest.mark.parametrize("main", [report.main, export.main], ids=["report", "export"])
@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "nope"])
def test_report_and_export_refuse_a_bad_or_unknown_sweep_name_creating_nothing(main, name, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([name, "--storage-path", "results", "-o", "out"]) == 2
    err = capsys.readouterr().err
    expected = f"sweep name {name!r}: expected" if name != "nope" else "nope/sweep.json: no sweep state"
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("main", [report.main, export.main], ids=["report", "export"])
def test_report_and_export_refuse_an_output_under_a_file_creating_nothing(main, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["kl", "--storage-path", str(tmp_path / "results"), "-o",
                 str(tmp_path / "file" / "out")]) == 2
    assert capsys.readouterr().err == (f"error: -o {tmp_path / 'file' / 'out'}: not writable "
                                       f"({tmp_path / 'file'} is a file, not a folder)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("command", [[str(ROOT / "sweeps" / "run.py")],  # README's spelling
                                     ["-m", "sweeps.results.report"],
                                     ["-m", "sweeps.results.export"],
                                     ["-m", "sweeps.tools.benchmark"]])
def test_every_sweeps_command_has_help_and_the_shared_flags(command):
    done = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    if not command[-1].endswith("benchmark"):
        assert "--storage-path" in done.stdout
    if command[-1].endswith(("report", "export")):
        assert "-o OUT, --out OUT" in done.stdout


# ---- state ---------------------------------------------------------------------------------------

def test_state_round_trip_merges_and_reports_missing_keys(tmp_path):
    state_dir = tmp_path / "new" / "sweep"
    assert update_state(state_dir, parent_run_id="abc", mode="max") == \
        {"parent_run_id": "abc", "mode": "max"}
    update_state(state_dir, max_t=6, mode="min")
    assert load_state(state_dir) == {"parent_run_id": "abc", "mode": "min", "max_t": 6}
    with pytest.raises(LayoutError, match=r"sweep\.json: missing key\(s\) study_name"):
        load_state(state_dir, required=("max_t", "study_name"))
    with pytest.raises(LayoutError, match="no sweep state here"):
        load_state(tmp_path / "elsewhere")
    (state_dir / "sweep.json").write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        load_state(state_dir)


def test_objective_mode_is_checked():
    assert objective_mode({}) == "min" and objective_mode({"mode": "max"}) == "max"
    with pytest.raises(LayoutError, match="key 'mode' is 'maximise'; expected one of min, max"):
        objective_mode({"mode": "maximise"}, "x/sweep.json")


# ---- ranking -------------------------------------------------------------------------------------

def test_ranking_by_mode_with_missing_and_non_finite_values_last():
    values = [("a", 2.0), ("b", None), ("c", 1.0), ("d", math.nan), ("e", 3.0), ("f", math.inf)]
    order = [name for name, _ in ranked(values, "min", lambda item: item[1])]
    assert order == ["c", "a", "e", "b", "d", "f"]
    order = [name for name, _ in ranked(values, "max", lambda item: item[1])]
    assert order == ["e", "a", "c", "b", "d", "f"]  # inf is a failure report, not the best
    with pytest.raises(ValueError, match="expected one of min, max"):
        ranked(values, "best", lambda item: item[1])


# ---- trials read from their files ----------------------------------------------------------------

def write_trial(experiment: Path, trial_id: str, objectives: list[float], started: float,
                lr: float, failed: bool = False, checkpoints: int = 1) -> Path:
    """The files Ray Tune writes for a trial (params.json, result.json lines, error.txt,
    checkpoint_NNNNNN/model.ckpt)."""
    folder = experiment / trial_dirname(trial_id)
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"optim.lr": lr}))
    lines = [json.dumps({"trial_id": trial_id, "objective": value, "val/mel_distance": value,
                         "step": 2 * (i + 1), "timestamp": started + 10 * (i + 1),
                         "time_total_s": 10.0 * (i + 1), "config": {"ignored": 1}})
             for i, value in enumerate(objectives)]
    (folder / "result.json").write_text("\n".join(lines) + "\n")
    for index in range(checkpoints):
        (folder / f"checkpoint_{index:06d}").mkdir()
        (folder / f"checkpoint_{index:06d}" / CHECKPOINT_FILE).write_bytes(b"ckpt")
    if failed:
        (folder / "error.txt").write_text("Traceback ...")
    return folder


@pytest.mark.parametrize("mode", ["min", "max"])
def test_sweep_trials_best_first_failed_last_in_proposal_order(tmp_path, mode):
    paths = SweepPaths(str(tmp_path), "s")
    update_state(paths.state_dir, mode=mode, tracking_uri="sqlite:///x.db")
    experiment = Path(paths.experiment_dir)
    write_trial(experiment, "b", [5.0, 2.0], started=200.0, lr=1e-3, checkpoints=2)
    write_trial(experiment, "a", [3.0], started=100.0, lr=1e-4)
    write_trial(experiment, "c", [9.0, 1.0], started=300.0, lr=1e-2, failed=True)
    (experiment / trial_dirname("d")).mkdir()  # started, nothing reported yet
    state, trials = sweep_trials(paths)
    assert state["tracking_uri"] == "sqlite:///x.db"
    expected = {"min": ["b", "a", "c", "d"], "max": ["a", "b", "c", "d"]}[mode]  # unranked last
    assert [t.trial_id for t in trials] == expected
    by_id = {t.trial_id: t for t in trials}
    assert [by_id[i].status for i in "abcd"] == ["TERMINATED", "TERMINATED", "ERROR", "PENDING"]
    assert [by_id[i].order for i in "abcd"] == [1, 2, 3, 0]
    assert by_id["b"].metrics == {"objective": 2.0, "val/mel_distance": 2.0, "step": 4.0}
    assert by_id["b"].config == {"optim.lr": 1e-3}
    assert by_id["b"].checkpoint == str(experiment / trial_dirname("b") / "checkpoint_000001")
    assert by_id["d"].checkpoint is None and by_id["d"].objective is None


def write_reporting_trial(experiment: Path, trial_id: str, objectives: list[float], kept: list[int],
                          errored: bool = False) -> None:
    """A trial as sweeps/execution/trial.py reports it (mode min): each result with the running
    best and its step; the checkpoints Tune kept, each with its running_best.json."""
    folder = experiment / trial_dirname(trial_id)
    folder.mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    lines, best, best_step = [], None, None
    for index, value in enumerate(objectives):
        step = 2 * (index + 1)
        if best is None or value < best:
            best, best_step = value, step
        lines.append({"trial_id": trial_id, "objective": value, "val/mel_distance": value,
                      "step": step, "training_iteration": index + 1, "best_objective": best,
                      "best_step": best_step, "timestamp": 100.0 + index})
        if index in kept:
            checkpoint = folder / f"checkpoint_{index:06d}"
            checkpoint.mkdir()
            (checkpoint / CHECKPOINT_FILE).write_bytes(b"ckpt")
            (checkpoint / RUNNING_BEST_FILE).write_text(json.dumps(
                {"step": step, "objective": value, "best_objective": best, "best_step": best_step}))
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if errored:
        (folder / "error.txt").write_text("Traceback ... (then retried)")


def test_trials_rank_by_their_best_report_show_its_checkpoint_and_their_outcome(tmp_path):
    paths = SweepPaths(str(tmp_path), "s")
    update_state(paths.state_dir, mode="min", max_t=3, time_attr="training_iteration")
    experiment = Path(paths.experiment_dir)
    write_reporting_trial(experiment, "early", [2.0, 4.0, 3.0], kept=[0, 2])  # best first, kept
    write_reporting_trial(experiment, "late", [5.0, 1.5], kept=[1])
    write_reporting_trial(experiment, "retried", [3.0, 2.5, 2.6], kept=[1, 2], errored=True)
    write_reporting_trial(experiment, "running", [2.2], kept=[0])
    record_outcomes(paths.state_dir, {"early": "completed", "late": "pruned"})
    record_outcomes(paths.state_dir, {"retried": "completed"})  # merged, not replaced
    _, trials = sweep_trials(paths)
    assert [t.trial_id for t in trials] == ["late", "early", "running", "retried"]
    by_id = {t.trial_id: t for t in trials}
    assert [by_id[i].outcome for i in ("early", "late", "retried", "running")] == \
        ["completed", "pruned", "completed", "unfinished"]
    early = by_id["early"]
    assert early.value == early.objective == 2.0
    assert early.metrics == {"objective": 2.0, "val/mel_distance": 2.0, "step": 2.0,
                             "best_objective": 2.0, "best_step": 2.0}
    assert early.checkpoint == str(experiment / trial_dirname("early") / "checkpoint_000000")
    assert by_id["retried"].checkpoint.endswith("checkpoint_000001")
    assert trial_value({"objective": 3.0, "best_objective": 2.0}) == 2.0
    assert trial_value({"objective": 3.0}) == 3.0 and trial_value(None) is None


def test_list_sweeps_needs_state_and_follows_the_state_dir(tmp_path, monkeypatch):
    storage = tmp_path / "results"
    update_state(storage / "with_state", mode="min")
    (storage / "without_state").mkdir()
    assert list_sweeps(str(storage)) == ["with_state"]
    assert list_sweeps(str(tmp_path / "missing")) == []
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    update_state(tmp_path / "state" / "without_state", mode="min")
    assert list_sweeps(str(storage)) == ["without_state"]
    monkeypatch.setenv(STORAGE_ENV, str(storage))
    assert list_sweeps() == ["without_state"]
    with pytest.raises(LayoutError, match="s3://b: expected local"):
        list_sweeps("s3://b")
