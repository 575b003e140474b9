"""Reference codecs on a configuration's validation split (vae/codec/validation_anchors.py): the
split's mean weights each batch as validation's epoch mean does, chunk by chunk in validation's
order; ffmpeg's anchors code near their bitrate on the built-in data and stay in step with it;
each anchor's figure on a validation metric's axis."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import MICRO
from vae.codec.anchors import Anchor
from vae.codec.validation_anchors import (AnchorScore, score_on_validation, split_mean,
                                          validation_batches)
from vae.config import load_config
from vae.metrics import distortions

SR = 16000


def by_chunk_mean(batches: list[torch.Tensor], decoded: torch.Tensor) -> dict[str, float]:
    """The reference: chunk k of the joined audio cut out by its own index, each batch scored
    alone, averaged by the batches' weights."""
    totals: dict[str, list[float]] = {}
    k = 0
    for batch in batches:
        length = batch.shape[-1]
        chunks = []
        for _ in range(batch.shape[0]):
            chunks.append(decoded[:, k * length: (k + 1) * length])
            k += 1
        for name, (value, weight) in distortions(torch.stack(chunks), batch, SR).items():
            totals.setdefault(name, []).append((float(value) * weight, weight))
    return {name: sum(v for v, _ in pairs) / sum(w for _, w in pairs)
            for name, pairs in totals.items()}


def test_split_mean_scores_each_chunk_against_its_own_reference():
    generator = torch.Generator().manual_seed(0)
    # batches of 3, 3 and 1 chunks (a last, short batch weighs less), stereo
    batches = [torch.randn(n, 2, 4000, generator=generator) for n in (3, 3, 1)]
    joined = torch.cat([chunk for batch in batches for chunk in batch], dim=-1)
    decoded = joined + 0.3 * torch.randn(joined.shape, generator=generator)
    got = split_mean(batches, decoded, SR)
    assert got == pytest.approx(by_chunk_mean(batches, decoded), rel=1e-5)
    assert split_mean(batches, joined, SR)["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert split_mean(batches, joined, SR)["si_sdr"] > 60


def test_an_anchor_figure_on_each_axis():
    score = AnchorScore(Anchor("opus", 12.0), 12.4, {"mel_distance": 2.5, "si_sdr": 4.0,
                                                     "stft_distance": 5.0})
    assert score.label == "Opus 12 kbit/s"
    assert score.value("val/kl_kbps") == 12.4  # the coded rate on the latent rate's axis
    assert score.value("val/mel_distance") == score.value("val/mel_distance_sampled") == 2.5
    assert score.value("val/si_sdr_sampled") == 4.0
    assert score.value("val/active_units") is None and score.value("val/nope") is None


@pytest.fixture(scope="module")
def config():
    return load_config(overrides={**MICRO, "model.sample_rate": SR, "data.chunk_seconds": 0.5,
                                  "data.val_chunks": 8, "data.batch_size": 3})


def test_validation_batches_are_validations_at_its_level(config):
    batches = validation_batches(config)
    assert [b.shape[0] for b in batches] == [3, 3, 2]
    unlevelled = validation_batches(config.model_copy(update={
        "evaluation": config.evaluation.model_copy(update={"loudness_lufs": None})}))
    from vae.loudness import integrated_loudness

    for chunk in batches[0]:
        assert integrated_loudness(chunk, SR) == pytest.approx(-16.0, abs=0.1)
    assert not torch.allclose(batches[0], unlevelled[0])


def test_anchors_code_near_their_rate_on_the_validation_split(config):
    opus, mp3 = score_on_validation(config, [Anchor("opus", 12.0), Anchor("mp3", 32.0)])
    # 4 s of audio in one file each: containers included, near the asked rate
    assert opus.coded_kbps == pytest.approx(12, rel=0.3)
    assert mp3.coded_kbps == pytest.approx(32, rel=0.3)
    assert set(opus.distortions) == {"mel_distance", "stft_distance", "si_sdr"}
    # decoded in step with the chunks (an encoder delay left in would cost all of it)
    assert mp3.distortions["si_sdr"] > 5
    assert opus.distortions["mel_distance"] > mp3.distortions["mel_distance"] > 0
