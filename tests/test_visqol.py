"""vae-evaluate --visqol (issue 20): ViSQOL v3's MOS-LQO tells a clean decoding from a distorted
one, is the length-weighted mean of its windows (a short last window folded into the one before),
skips what it cannot score, comes for every decoding (the model's two, the codec's, the anchors')
and averages across files by duration; without the visqol extra the flag is one line and exit 2
before any work."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_inference import make_bundle, tone
from vae.cli.evaluate import main
from vae.inference.visqol import VisqolScorer, visqol_moslqo

# the scoring tests need the extra; the test of its absence runs without it
needs_visqol = pytest.mark.skipif(importlib.util.find_spec("visqol") is None,
                                  reason='the visqol extra: pip install -e ".[visqol]"')
RATE, CHANNELS = 44100, 2  # the tiny bundle's
FILES = {"a.wav": 2.0, "b.wav": 1.2}  # seconds: two lengths, for the duration-weighted mean


def clip(seconds: float) -> torch.Tensor:
    return torch.from_numpy(tone(seconds, RATE, CHANNELS).T.copy())


def scored(pred: torch.Tensor, ref: torch.Tensor, **options) -> VisqolScorer:
    scorer = VisqolScorer(RATE, **options)
    scorer.add(pred, ref)
    return scorer


@needs_visqol
def test_a_clean_decoding_scores_high_and_a_distorted_one_lower():
    reference = clip(3.0)
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal(reference.shape)).float()
    clean = scored(reference, reference).result()["visqol_moslqo"]
    distorted = scored(reference + 0.3 * noise, reference).result()["visqol_moslqo"]
    # measured: 4.73 and 2.6
    assert clean > 4
    assert distorted < clean - 1


@needs_visqol
def test_windows_are_weighted_by_length_and_a_short_tail_is_folded():
    reference = clip(2.5)
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal(reference.shape)).float()
    prediction = reference + 0.1 * noise
    scorer = VisqolScorer(RATE, "_sampled", window_seconds=1.2)
    for pred, ref in zip(prediction.split(RATE // 4, -1), reference.split(RATE // 4, -1)):
        scorer.add(pred, ref)  # in blocks, as evaluate_file gives them
    result = scorer.result()
    # 1.2 s, then 1.3 s: the 0.1 s tail is too short for ViSQOL on its own
    cut = round(1.2 * RATE)
    head = visqol_moslqo(prediction[:, :cut], reference[:, :cut], RATE)
    tail = visqol_moslqo(prediction[:, cut:], reference[:, cut:], RATE)
    assert scorer.windows == 2
    assert scorer.weights == {"visqol_moslqo_sampled": reference.shape[-1]}
    assert result["visqol_moslqo_sampled"] == pytest.approx((1.2 * head + 1.3 * tail) / 2.5, rel=1e-9)


@needs_visqol  # scored only if a window were wrongly taken
@pytest.mark.parametrize("reference", [torch.zeros(CHANNELS, RATE * 2), clip(0.5)],
                         ids=["silent", "shorter than a window"])
def test_what_visqol_cannot_score_is_nan_with_no_weight(reference):
    scorer = scored(clip(reference.shape[-1] / RATE), reference)
    assert math.isnan(scorer.result()["visqol_moslqo"])
    assert scorer.weights == {"visqol_moslqo": 0} and scorer.windows == 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("visqol")
    model = make_bundle(root / "model")
    for name, seconds in FILES.items():
        sf.write(root / name, tone(seconds, RATE, CHANNELS), RATE, subtype="FLOAT")
    return root, model


@needs_visqol
def test_visqol_scores_every_decoding_and_averages_by_duration(setup, tmp_path, capsys):
    root, model = setup
    out = tmp_path / "report.json"
    assert main([str(root / "a.wav"), str(root / "b.wav"), "--model", str(model), "--codec",
                 "--anchors", "opus:12", "--visqol", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    keys = ["visqol_moslqo", "visqol_moslqo_sampled", "codec/visqol_moslqo",
            "anchor/opus_12/visqol_moslqo"]
    files, mean = report["files"], report["mean"]
    for key in keys:
        for result in files:
            assert 1 <= result[key] <= 5, (result["file"], key)
        seconds = list(FILES.values())
        assert mean[key] == pytest.approx(sum(s * r[key] for s, r in zip(seconds, files))
                                          / sum(seconds))
    # the model's rows and the comparison's: each decoding with its ViSQOL
    printed = capsys.readouterr().out
    assert "visqol_moslqo_sampled" in printed
    assert f"{mean['anchor/opus_12/visqol_moslqo']:.4f}" in printed


def test_without_the_extra_visqol_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "visqol", None)  # what `import visqol` meets uninstalled
    out = tmp_path / "report" / "r.json"
    # a model that does not exist: the extra is checked before it is looked for
    status = main([str(tmp_path / "none.wav"), "--model", str(tmp_path / "no-model"), "--visqol",
                   "--json", str(out)])
    assert status == 2
    assert capsys.readouterr().err == ('error: --visqol needs the visqol extra: '
                                       'pip install -e ".[visqol]"\n')
    assert not out.parent.exists()
