"""sweep-study end to end on a tiny folder corpus: three arms (default, random + ASHA, TPE + ASHA),
each arm's pick exported, a table and a plot written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sweeps.tools.study import ARMS, arm_overrides
from sweeps.tools.study import main as study_main
from tests.conftest import MICRO
from vae.inference import load_bundle

SR = 44100
SPACE = {
    "name": "tiny_study",
    "base": {"overrides": {**MICRO, "data.source": "folder", "trainer.max_steps": 4,
                           "trainer.val_every_steps": 2}},
    "objective": {"metric": "val/mel_distance_sampled", "mode": "min"},
    "searcher": {"sampler": "tpe", "seed": 0, "startup_trials": 1},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "num_samples": 2,
    "max_concurrent_trials": 1,
    "resources": {"cpu": 1},
    "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    "points_to_evaluate": [{"optim.lr": 3e-4}],
}


def test_arm_overrides_keep_steps_and_data_and_change_only_the_search():
    raw = {**SPACE, "base": {"overrides": dict(SPACE["base"]["overrides"])}}
    default = arm_overrides(raw, "default", Path("/music"), 5)
    assert default["num_samples"] == 1 and default["scheduler"]["type"] == "none"
    assert default["base"]["overrides"]["data.root"] == "/music"
    assert default["base"]["overrides"]["trainer.max_steps"] == 4
    random = arm_overrides(raw, "random", Path("/music"), 5)
    assert random["searcher"]["sampler"] == "random" and random["num_samples"] == 5
    assert "scheduler" not in random  # the space's own ASHA
    assert "rate_budget" not in random
    budgeted = arm_overrides({**raw, "rate_budget": {"max_kbps": 9.0, "penalty_per_kbps": 0.5}},
                             "tpe", Path("/music"), 5, max_kbps=4.2)
    assert budgeted["rate_budget"] == {"max_kbps": 4.2, "penalty_per_kbps": 0.5}
    assert set(ARMS) == {"default", "random", "tpe", "points", "single"}
    points = arm_overrides({**raw, "points_to_evaluate": [{"optim.lr": 3e-4}, {"optim.lr": 1e-3}]},
                           "points", Path("/music"), 5)
    assert points["num_samples"] == 2  # every point once, whatever --trials says
    assert points["scheduler"]["type"] == "none" and points["searcher"]["sampler"] == "random"


def test_single_arm_ranks_a_multi_objective_space_by_its_primary_alone(tmp_path):
    from sweeps.space.schema import load_space

    objectives = [{"metric": "val/kl_kbps", "mode": "min"},
                  {"metric": "val/si_sdr_sampled", "mode": "max"}]
    raw = {**SPACE, "objective": None, "objectives": objectives, "primary": "val/si_sdr_sampled",
           "constraints": [{"metric": "val/kl_kbps", "max": 9.0}]}
    single = arm_overrides(raw, "single", Path("/music"), 3)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
    space = load_space(path, single)
    assert not space.multi_objective and space.constraints == []
    assert (space.spec.objective.metric, space.spec.objective.mode) == ("val/si_sdr_sampled", "max")
    assert space.spec.num_samples == 3 and space.name == "tiny_study-single"


def test_front_comparison_measures_each_arm_from_one_reference(tmp_path):
    from sweeps.objectives import Goal
    from sweeps.results.records import TrialRecord
    from sweeps.tools.study_front import compare_fronts

    def trial(name, kbps, mel, si_sdr):
        return TrialRecord(name, "TERMINATED", {}, {"val/kl_kbps": kbps, "val/mel_distance_sampled": mel,
                                                     "val/si_sdr_sampled": si_sdr}, None,
                           outcome="completed", steps_trained=10)

    goals = [Goal("val/kl_kbps", "min", 10.0), Goal("val/mel_distance_sampled", "min"),
             Goal("val/si_sdr_sampled", "max", -20.0)]
    arms = {"tpe": [trial("a", 2, 3.0, 1.0), trial("b", 4, 3.3, 5.0), trial("c", 5, 3.4, 0.5)],
            "single": [trial("d", 6, 2.9, -30.0), trial("e", 8, 4.0, -31.0)]}
    text = compare_fronts(arms, goals, tmp_path)
    result = json.loads((tmp_path / "front.json").read_text())
    # mel's reference: the worst any arm saw (4.0); a dominates c, d dominates e
    assert result["reference"] == {"val/kl_kbps": 10.0, "val/mel_distance_sampled": 4.0,
                                   "val/si_sdr_sampled": -20.0}
    assert result["arms"]["tpe"]["front"] == ["a", "b"]
    assert result["arms"]["single"]["front"] == ["d"] and result["arms"]["single"]["hypervolume"] == 0
    # a: (10-2)(4-3)(1+20) = 168; b adds the box above a's SI-SDR: (10-4)(4-3.3)(5-1) = 16.8
    assert result["arms"]["tpe"]["hypervolume"] == pytest.approx(168 + 16.8)
    assert result["best_mel"] == 2.9
    # SI-SDR >= 0 with mel <= 1.1 x 2.9 = 3.19: a (3.0) yes; b (3.3) no; d (SI-SDR -30) no
    assert text.count("| yes") == 1 and text.count("| no") == 2
    assert (tmp_path / "fronts.png").stat().st_size > 0


@pytest.mark.slow
def test_points_arm_trains_each_starting_point_once_and_tables_them(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", {"train": 1.0, "valid": 1.0})
    space = tmp_path / "space.yaml"
    points = [{"optim.lr": 3e-4}, {"optim.lr": 2e-3}, {"optim.lr": 5e-3}]
    space.write_text(yaml.safe_dump({**SPACE, "points_to_evaluate": points}))
    out = tmp_path / "study"
    assert study_main([str(space), "--corpus", str(corpus), "-o", str(out), "--arms", "points",
                       "--anchors", "opus:12"]) == 0
    rows = [line for line in (out / "points.md").read_text().splitlines()[2:]]
    assert [row.split("|")[2].strip() for row in rows] == \
        ["(the first point)", "optim.lr=0.002", "optim.lr=0.005"]
    assert all(row.split("|")[3].strip() == "4" for row in rows)  # trained to max_steps, unstopped
    assert "val/si_sdr_sampled" in (out / "points.md").read_text()
    # the reference codec, scored on the corpus's valid split as the trials are
    anchors = (out / "anchors.csv").read_text().splitlines()
    assert len(anchors) == 2 and anchors[1].startswith("Opus 12 kbit/s,")
    assert "| Opus 12 kbit/s |" in (out / "anchors.md").read_text()


@pytest.mark.slow
def test_study_runs_three_arms_and_exports_each_pick(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("valid", 1)):
        (corpus / split).mkdir(parents=True)
        for k in range(count):
            t = np.arange(SR) / SR
            audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t)[:, None] * np.ones((1, 2))
            sf.write(corpus / split / f"{k}.wav", audio.astype(np.float32), SR)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "study"
    assert study_main([str(space), "--corpus", str(corpus), "-o", str(out)]) == 0
    rows = {r["arm"]: r for r in json.loads((out / "study.json").read_text())}
    assert set(rows) == {"default", "random", "tpe"}
    assert rows["default"]["trials"] == 1 and rows["default"]["config"] == {"optim.lr": 3e-4}
    assert rows["random"]["trials"] == rows["tpe"]["trials"] == 2
    assert rows["default"]["steps_trained"] == 4
    # the searching arms are budgeted at the default's measured rate
    assert rows["default"]["max_kbps"] is None
    assert rows["random"]["max_kbps"] == rows["tpe"]["max_kbps"] == round(rows["default"]["kl_kbps"], 3)
    for row in rows.values():
        bundle = load_bundle(row["bundle"])
        assert bundle.provenance["trial_id"] == row["pick"]
    assert (out / "rate_distortion.png").stat().st_size > 0
    assert "sampled vs default" in (out / "study.md").read_text()
    printed = capsys.readouterr().out  # where the arms' MLflow runs are, ready to paste
    assert f"MLflow: {Path(sys.executable).parent}/mlflow ui --backend-store-uri sqlite:///{out}/mlflow.db" \
        in printed
    assert "  then open http://127.0.0.1:5000/#/experiments/" in printed


def write_corpus(corpus: Path, seconds: dict[str, float]) -> Path:
    """One stereo tone per split: ``{"train": 1.0, "valid": 0.01}``."""
    for split, length in seconds.items():
        (corpus / split).mkdir(parents=True)
        for k in range(2):
            t = np.arange(round(length * SR)) / SR
            audio = 0.3 * np.sin(2 * np.pi * 220 * (k + 1) * t)[:, None] * np.ones((1, 2))
            sf.write(corpus / split / f"{k}.wav", audio.astype(np.float32), SR)
    return corpus


BAD_STUDIES = [  # (label, space changes, corpus splits and lengths, what the error names)
    ("corpus without audio", {}, {}, "no audio files under"),
    ("valid split shorter than a chunk", {}, {"train": 1.0, "valid": 0.01},
     "no valid file is as long as a chunk"),
    ("unsafe name in the space", {"name": ".."}, {"train": 1.0, "valid": 1.0},
     "name: Value error, sweep name '..'"),
    ("arm name too long", {"name": "s" * 95}, {"train": 1.0, "valid": 1.0},
     "as the default arm runs it: name: Value error, sweep name"),
    ("not on folder data", {"base": {"overrides": {**MICRO, "trainer.max_steps": 4,
                                                    "trainer.val_every_steps": 2}}},
     {"train": 1.0, "valid": 1.0}, "data.source: 'synthetic'"),
]


@pytest.mark.parametrize("label, changes, splits, message", BAD_STUDIES,
                         ids=[b[0] for b in BAD_STUDIES])
def test_bad_space_or_corpus_is_refused_before_any_folder_or_ray(tmp_path, capsys, label, changes,
                                                                 splits, message):
    import ray

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus, splits)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, **changes}))
    assert study_main([str(space), "--corpus", str(corpus), "-o", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert (str(space) if changes else str(corpus)) in err.splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "space.yaml"]
    assert not ray.is_initialized()


def test_a_bad_anchor_list_is_refused_before_any_folder_or_ray(tmp_path, capsys):
    import ray

    corpus = write_corpus(tmp_path / "corpus", {"train": 1.0, "valid": 1.0})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    assert study_main([str(space), "--corpus", str(corpus), "-o", str(tmp_path / "study"),
                       "--anchors", "mp3:1000"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --anchors 'mp3:1000': mp3 codes 8 to 320 kbit/s"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "space.yaml"]
    assert not ray.is_initialized()
