"""sweep-promote (issue 21): the rank agreement against hand-computed values; the promoted space
as the promotion runs it; end to end, a tiny real sweep (Ray, Optuna, an MLflow sqlite store,
Lightning) whose two best configurations are trained again for longer, linked both ways, compared,
exported and reported; bad input refused before anything is created."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import pytest
import ray
import yaml

from sweeps.execution.driver import run_sweep
from sweeps.layout import SweepPaths, load_state, update_state
from sweeps.tools.promote import main as promote_main
from sweeps.tools.promote import promoted_raw, write_space
from sweeps.results.promotion import (PROMOTION_JSON, PROMOTION_MD, RHO_METRIC, TAU_METRIC,
                                      promotion_lines, rank_agreement)
from sweeps.results.records import sweep_trials
from sweeps.results.report import build_report
from sweeps.space.schema import load_space
from tests.conftest import MICRO
from vae.inference import load_bundle

FFT_SIZES = [[256, 1024], [512, 2048]]  # list choices: they travel JSON-encoded (decode_sampled)
SPACE = {
    "name": "short",
    "base": {"overrides": {**{k: v for k, v in MICRO.items() if k != "loss.stft.fft_sizes"},
                           "trainer.max_steps": 4, "trainer.val_every_steps": 2}},
    "objective": {"metric": "val/mel_distance", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 0, "startup_trials": 1},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 3,
    "max_concurrent_trials": 1,
    "resources": {"cpu": 1},
    "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
               "loss.stft.fft_sizes": {"type": "categorical", "choices": FFT_SIZES}},
    "points_to_evaluate": [{"optim.lr": 3e-3, "loss.stft.fft_sizes": FFT_SIZES[0]},
                           {"optim.lr": 1e-4, "loss.stft.fft_sizes": FFT_SIZES[1]},
                           {"optim.lr": 3e-2, "loss.stft.fft_sizes": FFT_SIZES[1]}],
}
STEPS = 6


# ---- the rank agreement --------------------------------------------------------------------------

@pytest.mark.parametrize("short, long, mode, tau, rho", [
    ([1, 2, 3, 4], [2, 1, 3, 4], "min", 2 / 3, 0.8),  # one adjacent swap: 5 of 6 pairs agree
    ([1, 2, 3, 4], [1, 2, 3, 4], "min", 1.0, 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], "min", -1.0, -1.0),
    ([4.0, 3.0, 2.0, 1.0], [3.0, 4.0, 2.0, 1.0], "max", 2 / 3, 0.8),  # higher is better
    ([0.5, 0.9, 2.0], [7.0, 3.0, 5.0], "min", -1 / 3, -0.5),  # ranks 1,2,3 vs 3,1,2
    ([0.5, 0.9, 2.0], [7.0, 3.0, 5.0], "max", -1 / 3, -0.5),  # ranks 3,2,1 vs 1,3,2
    ([1.0, 2.0], [2.0, 1.0], "min", -1.0, -1.0),
])
def test_rank_agreement_matches_hand_computed_tau_and_rho(short, long, mode, tau, rho):
    agreement = rank_agreement(short, long, mode)
    assert agreement.tau == pytest.approx(tau) and agreement.rho == pytest.approx(rho)
    assert [row.short for row in agreement.table] == short


def test_ranks_follow_the_mode_and_a_missing_long_value_ranks_last():
    agreement = rank_agreement([3.0, 1.0, 2.0], [None, 5.0, 4.0], "min")
    assert [(r.short_rank, r.long_rank) for r in agreement.table] == [(3, 3), (1, 2), (2, 1)]
    assert not agreement.pick_held  # short's best (index 1) is long's second
    maximised = rank_agreement([3.0, 1.0, 2.0], [9.0, 5.0, 4.0], "max")
    assert [(r.short_rank, r.long_rank) for r in maximised.table] == [(1, 1), (3, 2), (2, 3)]
    assert maximised.pick_held


def test_the_promoted_space_keeps_the_search_and_changes_only_length_stopping_and_points(tmp_path):
    from vae.config import load_config

    base = load_config(None, SPACE["base"]["overrides"]).to_dict()
    points = [{"optim.lr": 0.002, "loss.stft.fft_sizes": FFT_SIZES[1]},
              {"optim.lr": 0.01, "loss.stft.fft_sizes": FFT_SIZES[0]}]
    args = argparse.Namespace(steps=7, workers=2, max_concurrent=None)
    space = write_space(promoted_raw(SPACE, "short-p", base, points, args, "short"), tmp_path)
    assert space.name == "short-p" and space.spec.num_samples == 2
    assert space.spec.scheduler.type == "none" and space.spec.searcher.sampler == "random"
    assert space.spec.points_to_evaluate == points and space.json_params == ("loss.stft.fft_sizes",)
    assert space.base_config.trainer.max_steps == 7
    assert space.base_config.trainer.val_every_steps == 2  # kept, 7 not a multiple of it
    assert space.max_t == 4  # ceil(7 / 2) validations: every trial runs to its end
    assert space.spec.resources.workers == 2 and space.spec.resources.cpu == 1
    assert space.spec.max_concurrent_trials == 1
    assert space.base_config.model.channels == MICRO["model.channels"]
    assert list(space.spec.params) == list(SPACE["params"])


# ---- end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_sweep(tmp_path_factory):
    """The tiny sweep to promote: 3 trials of 4 steps with ASHA (results, mlflow.db under root)."""
    root = tmp_path_factory.mktemp("promote")
    space_file = root / "short.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    paths = SweepPaths(str(root / "results"), SPACE["name"])
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run_sweep(load_space(space_file), paths, tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    finally:
        ray.shutdown()
    return root, paths


@pytest.mark.slow
def test_promote_reruns_the_top_configurations_longer_links_compares_and_exports(
        short_sweep, capsys, tmp_path):
    root, first = short_sweep
    _, before = sweep_trials(first)
    top = [t for t in before if t.outcome != "failed" and t.value is not None][:2]
    out = tmp_path / "champion"
    argv = ["short", "--top", "2", "--steps", str(STEPS), "--storage-path", str(root / "results"),
            "-o", str(out), "--max-concurrent", "2", "--workers", "1", "--num-cpus", "2"]
    assert promote_main(argv) == 0
    printed = capsys.readouterr().out
    promoted = SweepPaths(first.storage_path, "short-promoted")

    # exactly the two configurations, each once, trained to the new length without stopping
    new_state, ran = sweep_trials(promoted)
    assert sorted(json.dumps(t.config, sort_keys=True) for t in ran) == \
        sorted(json.dumps(t.config, sort_keys=True) for t in top)
    assert all(t.steps_trained == STEPS and t.outcome == "completed" for t in ran)
    assert yaml.safe_load((promoted.state_dir / "short-promoted.yaml").read_text()
                          )["resources"]["workers"] == 1

    # linked both ways: states and parent runs
    link = new_state["promoted_from"]
    assert link["sweep"] == "short" and link["steps"] == STEPS
    by_id = {t.trial_id: t for t in ran}
    assert {by_id[new].config == next(t.config for t in top if t.trial_id == old)
            for new, old in link["trials"].items()} == {True} and len(link["trials"]) == 2
    first_state = load_state(first.state_dir)
    assert first_state["promoted_to"] == ["short-promoted"]
    client = mlflow.MlflowClient(first_state["tracking_uri"])
    old_run = client.get_run(first_state["parent_run_id"]).data
    new_run = client.get_run(new_state["parent_run_id"]).data
    assert new_run.tags["promoted_from_run"] == first_state["parent_run_id"]
    assert new_run.tags["promoted_from_sweep"] == "short"
    assert old_run.tags["promoted_to_run"] == new_state["parent_run_id"]
    assert old_run.tags["promoted_to_sweep"] == "short-promoted"

    # τ and ρ: the rank agreement of the values in the two sweeps' files, in the first's order
    record = json.loads((promoted.report_dir / PROMOTION_JSON).read_text())
    by_old = {old: new for new, old in link["trials"].items()}
    expected = rank_agreement([t.value for t in top],
                              [by_id[by_old[t.trial_id]].value for t in top], "min")
    assert record["kendall_tau"] == pytest.approx(expected.tau)
    assert record["spearman_rho"] == pytest.approx(expected.rho)
    assert [r["trial_id"] for r in record["trials"]] == [t.trial_id for t in top]
    assert [r["short_rank"] for r in record["trials"]] == [1, 2]
    assert record["pick_held"] == expected.pick_held
    for run in (old_run, new_run):
        assert run.metrics[TAU_METRIC] == pytest.approx(expected.tau)
        assert run.metrics[RHO_METRIC] == pytest.approx(expected.rho)
    table = (promoted.report_dir / PROMOTION_MD).read_text()
    assert all(f"trial_{t.trial_id}" in table for t in top) and "loss.stft.fft_sizes=[" in table
    assert table.splitlines()[4] in printed and record["verdict"] in printed

    # the promoted champion, as sweep-export would write it
    bundle = load_bundle(out)
    best = min((t for t in ran if t.value is not None), key=lambda t: t.value)
    assert bundle.provenance["sweep"] == "short-promoted"
    assert bundle.provenance["trial_id"] == best.trial_id
    assert f"sweep-report short --storage-path {first.storage_path}" in printed

    # the first sweep's report, built again, says how the ranking held
    summary = build_report(first, first.report_dir)
    line = (f"Ranking over 1.5× the steps ({STEPS} vs 4, top 2): "
            f"τ = {expected.tau:.2f}, ρ = {expected.rho:.2f}; {record['verdict']} "
            f"(see short-promoted/report/{PROMOTION_MD})")
    assert summary["promotion"] == [line]
    assert line + "." in (first.report_dir / "trials.md").read_text()
    assert json.loads((first.report_dir / "summary.json").read_text())["promotion"] == [line]

    # once it exists, the same name needs --resume
    assert promote_main(argv) == 2
    assert "--name short-promoted: a sweep of that name exists" in capsys.readouterr().err


# ---- bad input -----------------------------------------------------------------------------------

def one_trial_sweep(storage: Path) -> None:
    """A sweep on disk with one ranked trial (state and a result line, as the driver and Tune
    leave them)."""
    state_dir = storage / "one"
    update_state(state_dir, tracking_uri="sqlite:///nowhere.db", experiment_id="1",
                 parent_run_id="p", mode="min", study_name="one")
    (state_dir / "trial_aaaa").mkdir()
    (state_dir / "trial_aaaa" / "result.json").write_text(
        json.dumps({"trial_id": "aaaa", "best_objective": 1.0, "step": 2}) + "\n")


@pytest.mark.parametrize("argv, message", [
    (["nope", "--top", "2", "--steps", "5"], "error: SWEEP nope: "),
    (["one", "--top", "1", "--steps", "5"], "error: --top 1: expected an integer of 2 or more"),
    (["one", "--top", "2", "--steps", "0"], "error: --steps 0: expected an integer of 1 or more"),
    (["one", "--top", "2", "--steps", "5", "--workers", "0"],
     "error: --workers 0: expected an integer of 1 or more"),
    (["one", "--top", "3", "--steps", "5"],
     "error: --top 3: sweep 'one' has 1 ranked trial(s) with a value; promoting needs 2 or more"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_created(tmp_path, monkeypatch, capsys,
                                                               argv, message):
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "results"
    one_trial_sweep(storage)
    before = sorted(tmp_path.rglob("*"))
    assert promote_main([*argv, "--storage-path", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # no promoted sweep, no bundle, no store


def test_a_report_names_a_promotion_that_did_not_finish(tmp_path):
    paths = SweepPaths(str(tmp_path), "short")
    lines = promotion_lines(paths, {"promoted_to": ["short-promoted"]})
    assert lines == [f"Promoted to short-promoted: no {PROMOTION_JSON} yet (the promotion did "
                     "not finish; run sweep-promote again with --resume --name short-promoted)"]
    assert promotion_lines(paths, {}) == []
