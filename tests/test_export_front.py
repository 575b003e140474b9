"""sweep-export per bitrate and of the front (issue 19): --at-kbps picks the best trial within a
rate budget at each trial's best report, refuses a budget none meets; --front exports exactly the
Pareto front; --register sets one alias per budget. Sweeps are built on disk as Ray Tune and the
driver write them (state file, result.json, checkpoint folders with a real tiny Lightning
checkpoint), with a real MLflow sqlite store holding the parent and child runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from sweeps.results import export
from sweeps.app.trials import FRONT_COLUMN, trial_rows
from sweeps.results.export import champion_alias, front_aliases
from sweeps.results.pareto import sweep_front
from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_FILE, OBJECTIVE, RUNNING_BEST_FILE,
                           STATE_DIR_ENV, STORAGE_ENV, SweepPaths, trial_dirname, update_state)
from sweeps.objectives import (RATE_METRIC, Constraint, Goal, constraints_to_state, goals_to_state,
                               ranked_value, total_violation)
from sweeps.results.records import TrialRecord, sweep_trials
from tests.test_untrusted_checkpoints import tiny_args
from vae.config import load_config
from vae.inference import load_bundle
from vae.training.train import train

MEL, SI_SDR = "val/mel_distance_sampled", "val/si_sdr_sampled"

# Single-objective sweep (mel, min): its front is rate vs mel. Each trial: its reports as
# (kbps, mel); the best report is the one with the lowest mel.
PLAIN = {
    "aaaa": [(2.0, 5.0)],
    "bbbb": [(2.9, 4.0)],
    # best report (3.5 kbit/s, mel 3.5) above a 3 kbit/s budget; its LAST report is within it
    "cccc": [(3.5, 3.5), (1.0, 9.0)],
    "dddd": [(6.0, 3.0)],
    "eeee": [(4.0, 4.2)],  # dominated by cccc
    "ffff": [(1.0, 1.0)],  # failed: never picked, never on the front
}
PLAIN_FAILED = {"ffff"}
PLAIN_FRONT = ["aaaa", "bbbb", "cccc", "dddd"]  # by rate

# Three objectives (rate min, mel min, SI-SDR max) with SI-SDR >= 0; primary mel.
GOALS = [Goal(RATE_METRIC, "min"), Goal(MEL, "min"), Goal(SI_SDR, "max")]
CONSTRAINTS = [Constraint(SI_SDR, low=0.0)]
MULTI = {
    "pppp": [(2.0, 4.0, -5.0)],  # the best mel within 3 kbit/s, but infeasible
    "qqqq": [(2.5, 5.0, 2.0)],
    "rrrr": [(4.0, 4.5, 8.0)],
    "ssss": [(4.5, 4.8, 1.0)],  # dominated by rrrr
}
MULTI_FRONT = ["qqqq", "rrrr"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of a tiny VAE (2 steps)."""
    root = tmp_path_factory.mktemp("tiny_train")
    result = train(load_config(None, tiny_args(root)), run_dir=root / "run")
    return Path(result.last_checkpoint)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("export-front", artifact_location=(root / "art").as_uri())
    return {"uri": uri, "client": client, "experiment_id": experiment}


def write_trial(experiment: Path, trial_id: str, reports: list[dict], checkpoint: Path,
                failed: bool, mode: str = "min") -> None:
    """A trial folder as Ray Tune and sweeps/execution/trial.py leave it: params, one result line
    per report (with the running best), one checkpoint folder per report."""
    folder = experiment / trial_dirname(trial_id)
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"loss.kl.weight": len(reports) * 0.1}))
    best, lines = None, []
    for index, report in enumerate(reports, 1):
        step = index * 10
        if best is None or (report[OBJECTIVE] < best[OBJECTIVE]) == (mode == "min"):
            best = {**report, "step": step}
        lines.append({**report, "trial_id": trial_id, "step": step, "training_iteration": index,
                      BEST_OBJECTIVE: best[OBJECTIVE], BEST_STEP: best["step"],
                      "timestamp": 1_000 + index, "time_total_s": index})
        saved = folder / f"checkpoint_{index - 1:06d}"
        saved.mkdir()
        shutil.copy(checkpoint, saved / CHECKPOINT_FILE)
        (saved / RUNNING_BEST_FILE).write_text(json.dumps({"step": step, OBJECTIVE: report[OBJECTIVE]}))
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if failed:
        (folder / "error.txt").write_text("boom")


def make_sweep(root: Path, name: str, store: dict, checkpoint: Path, trials: dict[str, list[dict]],
               failed: set[str] = frozenset(), **state) -> SweepPaths:
    from sweeps.execution.tracking import open_child_run

    paths = SweepPaths(str(root), name)
    parent = store["client"].create_run(store["experiment_id"], run_name=name).info.run_id
    for trial_id, reports in trials.items():
        write_trial(Path(paths.experiment_dir), trial_id, reports, checkpoint, trial_id in failed)
        open_child_run(store["client"], store["experiment_id"], parent, trial_id, trial_id, name)
    update_state(paths.state_dir, tracking_uri=store["uri"], experiment_id=store["experiment_id"],
                 parent_run_id=parent, mode="min", max_t=1,
                 outcomes={t: "failed" if t in failed else "completed" for t in trials}, **state)
    return paths


@pytest.fixture(scope="module")
def plain(tmp_path_factory, store, checkpoint) -> SweepPaths:
    reports = {t: [{RATE_METRIC: kbps, MEL: mel, OBJECTIVE: mel} for kbps, mel in r]
               for t, r in PLAIN.items()}
    return make_sweep(tmp_path_factory.mktemp("plain"), "plain", store, checkpoint, reports,
                      PLAIN_FAILED, objective=MEL)


@pytest.fixture(scope="module")
def multi(tmp_path_factory, store, checkpoint) -> SweepPaths:
    reports = {}
    for trial_id, points in MULTI.items():
        reports[trial_id] = []
        for kbps, mel, sdr in points:
            metrics = {RATE_METRIC: kbps, MEL: mel, SI_SDR: sdr}
            scalar = ranked_value(mel, "min", total_violation(CONSTRAINTS, metrics))
            reports[trial_id].append({**metrics, OBJECTIVE: scalar})
    return make_sweep(tmp_path_factory.mktemp("multi"), "multi", store, checkpoint, reports,
                      objective=MEL, objectives=goals_to_state(GOALS),
                      constraints=constraints_to_state(CONSTRAINTS))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)


def cli(paths: SweepPaths, *args: str) -> int:
    return export.main([paths.name, "--storage-path", paths.storage_path, *args])


# ---- --at-kbps ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kbps, expected", [(3, "bbbb"), (2.0, "aaaa"), (3.5, "cccc"), (100, "dddd")])
def test_at_kbps_picks_the_best_trial_within_the_rate_at_its_best_report(plain, kbps, expected,
                                                                         tmp_path, capsys):
    """At 3 kbit/s: cccc's best report (mel 3.5) is at 3.5 kbit/s; its last report's 1 kbit/s
    does not count, nor does the failed ffff's 1 kbit/s."""
    out = tmp_path / "bundle"
    assert cli(plain, "--at-kbps", str(kbps), "-o", str(out)) == 0
    printed = json.loads(capsys.readouterr().out)
    bundle = load_bundle(out)
    assert printed["trial_id"] == bundle.provenance["trial_id"] == expected
    best_mel = min(mel for _, mel in PLAIN[expected])
    assert bundle.metrics[MEL] == best_mel and printed["kbps"] <= kbps
    assert bundle.provenance["mlflow_run_id"] == printed["mlflow_run_id"] is not None


def test_at_kbps_respects_the_sweeps_constraints(multi, tmp_path, capsys):
    """pppp has the best mel within 3 kbit/s but SI-SDR < 0: qqqq is exported."""
    assert cli(multi, "--at-kbps", "3", "-o", str(tmp_path / "bundle")) == 0
    assert json.loads(capsys.readouterr().out)["trial_id"] == "qqqq"


@pytest.mark.parametrize("sweep, kbps, lowest", [
    ("plain", "1.5", f"(lowest: 2 kbit/s, {trial_dirname('aaaa')})"),
    # pppp (2 kbit/s) is within 2.2 but violates SI-SDR >= 0
    ("multi", "2.2", f"(lowest: 2.5 kbit/s, {trial_dirname('qqqq')})"),
])
def test_at_kbps_refuses_a_budget_no_trial_meets_creating_nothing(sweep, kbps, lowest, request,
                                                                  tmp_path, capsys):
    paths = request.getfixturevalue(sweep)
    out = tmp_path / "bundle"
    assert cli(paths, "--at-kbps", kbps, "-o", str(out)) == 2
    err = capsys.readouterr().err
    meeting = " meeting val/si_sdr_sampled >= 0" if sweep == "multi" else ""
    assert err == (f"error: {sweep}: no trial{meeting} has {RATE_METRIC} <= {kbps} kbit/s at its "
                   f"best report {lowest}\n")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kbps", ["0", "-1", "nan", "inf"])
def test_at_kbps_must_be_a_positive_rate(plain, kbps, tmp_path, capsys):
    assert cli(plain, "--at-kbps", kbps, "-o", str(tmp_path / "bundle")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --at-kbps ") and "positive number of kbit/s" in err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_at_kbps_and_front_are_exclusive(plain, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(plain, "--at-kbps", "3", "--front", "-o", str(tmp_path / "out"))
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- --front ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sweep, members, goals", [
    ("plain", PLAIN_FRONT, [RATE_METRIC, MEL]),
    ("multi", MULTI_FRONT, [RATE_METRIC, MEL, SI_SDR]),
])
def test_front_exports_exactly_the_front(sweep, members, goals, request, tmp_path, capsys):
    paths = request.getfixturevalue(sweep)
    out = tmp_path / "front"
    assert cli(paths, "--front", "-o", str(out)) == 0
    listing = json.loads((out / "front.json").read_text())
    assert json.loads(capsys.readouterr().out) == listing
    assert [m["trial_id"] for m in listing["members"]] == members
    assert sorted(p.name for p in out.iterdir()) == sorted([*members, "front.json"])
    assert [g["metric"] for g in listing["goals"]] == goals and listing["hypervolume"] > 0
    for member in listing["members"]:
        bundle = load_bundle(member["bundle"])
        assert Path(member["bundle"]) == (out / member["trial_id"]).resolve()
        assert bundle.provenance["trial_id"] == member["trial_id"]
        assert member["goals"] == {g: bundle.metrics[g] for g in goals}


def test_an_empty_front_is_refused_creating_nothing(tmp_path, store, checkpoint, capsys):
    """Every trial violates the constraint: nothing is on the front."""
    reports = {"zzzz": [{RATE_METRIC: 2.0, MEL: 4.0, SI_SDR: -3.0, OBJECTIVE: 1e6 + 3}]}
    paths = make_sweep(tmp_path / "results", "infeasible", store, checkpoint, reports,
                       objective=MEL, constraints=constraints_to_state(CONSTRAINTS))
    out = tmp_path / "front"
    assert cli(paths, "--front", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: infeasible: no trial on the front") and len(err.splitlines()) == 1
    assert not out.exists()


def test_the_app_marks_the_front_in_its_trial_table(plain):
    state, trials = sweep_trials(plain)
    front = sweep_front(state, trials)
    rows = trial_rows(trials, {t.trial_id for t in front.members})
    assert {row["trial"] for row in rows if row[FRONT_COLUMN]} == set(PLAIN_FRONT)
    assert [row["trial"] for row in rows] == [t.trial_id for t in trials]  # order kept


# ---- aliases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kbps, alias", [
    (None, "champion"), (3, "champion-3kbps"), (3.0, "champion-3kbps"), (1.5, "champion-1p5kbps"),
    (0.75, "champion-0p75kbps"), (30.0, "champion-30kbps"), (24, "champion-24kbps"),
])
def test_champion_alias_is_a_valid_mlflow_alias(kbps, alias):
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    assert champion_alias(kbps) == alias
    _validate_model_alias_name(alias)
    _validate_model_alias_name_reserved(alias)


def record(trial_id: str, kbps: float, mel: float) -> TrialRecord:
    return TrialRecord(trial_id, "TERMINATED", {}, {RATE_METRIC: kbps, MEL: mel}, None,
                       outcome="completed", value=mel)


def test_front_aliases_name_each_rate_rounded_up_and_the_best_member_within_it():
    """4.2 is its own budget (not 4.3: 4.2 is not exactly representable); 4.21 and 4.24 share
    4.3, the better-ranked takes it; at 3 kbit/s the better-ranked 2 kbit/s member wins."""
    members = [record("two", 2.0, 3.0), record("near3", 2.95, 4.0), record("x42", 4.2, 2.5),
               record("x421", 4.21, 2.4), record("x424", 4.24, 2.2)]
    ranking = sorted(members, key=lambda t: t.value)
    assert front_aliases(members, ranking) == {
        "champion-2kbps": "two", "champion-3kbps": "two", "champion-4p2kbps": "x42",
        "champion-4p3kbps": "x424"}


def test_register_sets_the_alias_of_the_budget(plain, store, tmp_path, capsys):
    assert cli(plain, "--at-kbps", "3", "-o", str(tmp_path / "b"), "--register", "rate-vae") == 0
    registered = json.loads(capsys.readouterr().out)["registered"]
    assert registered["alias"] == "champion-3kbps"
    assert registered["uri"] == "models:/rate-vae@champion-3kbps"
    version = store["client"].get_model_version_by_alias("rate-vae", "champion-3kbps")
    run = store["client"].get_run(version.run_id)
    assert run.data.tags["ray.trial_id"] == "bbbb"


def test_register_front_registers_every_member_and_one_alias_per_budget(plain, store, tmp_path,
                                                                         capsys):
    assert cli(plain, "--front", "-o", str(tmp_path / "front"), "--register", "front-vae") == 0
    listing = json.loads(capsys.readouterr().out)
    client = store["client"]
    versions = client.search_model_versions("name='front-vae'")
    assert len(versions) == len(PLAIN_FRONT)
    expected = {"champion-2kbps": "aaaa", "champion-2p9kbps": "bbbb", "champion-3p5kbps": "cccc",
                "champion-6kbps": "dddd"}
    assert listing["aliases"] == {a: f"models:/front-vae@{a}" for a in expected}
    for alias, trial_id in expected.items():
        version = client.get_model_version_by_alias("front-vae", alias)
        assert client.get_run(version.run_id).data.tags["ray.trial_id"] == trial_id
