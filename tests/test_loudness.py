"""Loudness normalisation (ITU-R BS.1770 via pyloudnorm), its streaming measurement of files, and
the level-freedom it buys the metrics."""

import math

import numpy as np
import pytest
import torch

from vae.loudness import StreamingLoudness, integrated_loudness, loudness_gain, normalize_loudness
from vae.metrics import mel_distance

SR = 44100


def sine(amplitude: float, seconds: float = 2.0, hz: float = 997.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * hz * t)).float().repeat(2, 1)


def test_full_scale_sine_reads_as_bs1770_says():
    # BS.1770: a 0 dBFS 997 Hz sine in each of two channels reads +0 LUFS (-3.01 per channel).
    assert integrated_loudness(sine(1.0), SR) == pytest.approx(0.0, abs=0.1)
    assert integrated_loudness(sine(0.1), SR) == pytest.approx(-20.0, abs=0.1)


def test_normalize_brings_clips_to_the_target_and_silence_to_the_floor_gain():
    batch = torch.stack([sine(0.5), sine(0.01), torch.zeros(2, 2 * SR)])
    out, mean_before = normalize_loudness(batch, SR, target_lufs=-16.0, floor_lufs=-60.0)
    assert integrated_loudness(out[0], SR) == pytest.approx(-16.0, abs=0.05)
    assert integrated_loudness(out[1], SR) == pytest.approx(-16.0, abs=0.05)
    assert torch.equal(out[2], batch[2])
    assert math.isfinite(mean_before)
    assert loudness_gain(float("-inf"), -16.0, -60.0) == pytest.approx(10 ** (44 / 20))
    assert loudness_gain(-80.0, -16.0, -60.0) == loudness_gain(-60.0, -16.0, -60.0)


def test_a_minus_20_db_input_scores_within_2_percent_once_normalised():
    rng = np.random.default_rng(0)
    reference = sine(0.3) + 0.02 * torch.from_numpy(rng.standard_normal((2, 2 * SR))).float()

    def codec(audio: torch.Tensor) -> torch.Tensor:  # a fixed linear degradation: a low-pass
        kernel = torch.ones(1, 1, 16) / 16
        return torch.nn.functional.conv1d(audio[:, None], kernel, padding="same")[:, 0]

    def score(gain: float, normalise: bool) -> float:
        source = reference * gain
        if normalise:
            source, _ = normalize_loudness(source, SR, -16.0, -60.0)
        return float(mel_distance(codec(source)[None], source[None], SR))

    raw_change = abs(score(0.1, False) / score(1.0, False) - 1)
    normalised_change = abs(score(0.1, True) / score(1.0, True) - 1)
    assert raw_change > 0.02, "without normalisation the metric depends on level"
    assert normalised_change < 0.02


def blocks_of(audio: torch.Tensor, sizes: list[int]):
    """``audio`` cut into consecutive blocks of the given sizes, cycled."""
    start, i = 0, 0
    while start < audio.shape[-1]:
        yield audio[:, start:start + sizes[i % len(sizes)]]
        start += sizes[i % len(sizes)]
        i += 1


def measured_in_blocks(audio: torch.Tensor, rate: int, sizes: list[int]) -> float:
    meter = StreamingLoudness(rate)
    for block in blocks_of(audio, sizes):
        meter.add(block)
    return meter.integrated()


@pytest.mark.parametrize("rate", [SR, 48000, 16000])
@pytest.mark.parametrize("seconds", [0.25, 0.4, 0.47, 1.234, 6.05])
@pytest.mark.parametrize("channels", [1, 2])
def test_streaming_loudness_equals_pyloudnorm_on_the_whole_signal(rate, seconds, channels):
    """Any block sizes (one sample, odd, larger than the signal); lengths below one gating block,
    at it and between the 100 ms steps; a quiet start and a silent stretch, which the gates drop."""
    rng = np.random.default_rng(round(seconds * 100) + channels)
    n = round(seconds * rate)
    audio = torch.from_numpy(0.2 * rng.standard_normal((channels, n))).float()
    audio[:, : n // 8] *= 1e-4  # below the relative gate
    audio[:, n // 4: n // 2] = 0.0  # below the absolute gate
    reference = integrated_loudness(audio, rate)  # pyloudnorm on the whole clip
    for sizes in ([65536], [1, 4097, 1000], [n + 5]):
        assert measured_in_blocks(audio, rate, sizes) == pytest.approx(reference, abs=1e-6), sizes


def test_streaming_loudness_of_silence_and_of_nothing():
    assert measured_in_blocks(torch.zeros(2, 3 * SR), SR, [10000]) == float("-inf")
    with pytest.raises(ValueError, match="empty"):
        StreamingLoudness(SR).integrated()
