"""The ranking metrics against an independent reference (numpy FFT, librosa-style mel filters)."""

import math

import numpy as np
import pytest
import torch

from vae.dsp import mel_filterbank
from vae.metric_table import METRIC_BY_KEY, METRICS, rank_key
from vae.metrics import (
    CLAMP_EPS,
    audible_si_sdr,
    MEL_BANDS,
    MEL_WINDOWS,
    STFT_WINDOWS,
    mel_distance,
    stft_distance,
)

SR = 44100


def numpy_magnitude(signal: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| [..., bins, frames]: centred reflect padding, periodic Hann, hop n_fft/4 (audiotools')."""
    hop = n_fft // 4
    padded = np.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (padded.shape[-1] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[..., index] * window, axis=-1)  # [..., frames, bins]
    return np.abs(spectrum).swapaxes(-1, -2)


def reference_stft_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    """DAC's MultiScaleSTFTLoss(window_lengths=[2048, 512]) with L1, clamp 1e-5, pow 2."""
    total = 0.0
    for n_fft in STFT_WINDOWS:
        p, r = numpy_magnitude(pred, n_fft), numpy_magnitude(ref, n_fft)
        log_p = np.log10(np.maximum(p, CLAMP_EPS) ** 2)
        log_r = np.log10(np.maximum(r, CLAMP_EPS) ** 2)
        total += np.abs(log_p - log_r).mean() + np.abs(p - r).mean()
    return float(total)


def reference_mel_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for n_fft, n_mels in zip(MEL_WINDOWS, MEL_BANDS):
        filters = mel_filterbank(SR, n_fft, n_mels).double().numpy()
        p = filters @ numpy_magnitude(pred, n_fft)
        r = filters @ numpy_magnitude(ref, n_fft)
        total += np.abs(np.log10(np.maximum(p, CLAMP_EPS)) - np.log10(np.maximum(r, CLAMP_EPS))).mean()
    return float(total)


def quiet_music_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stereo pair with silences and quiet high frequencies: many bins below |X| = 1e-4."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 660 * t)
    hiss = 1e-6 * rng.standard_normal(SR)
    ref = np.stack([tone + hiss, 0.5 * tone])
    ref[:, SR // 3: SR // 2] = 0.0  # a silence
    ref[1, -SR // 4:] = 0.0
    pred = 0.8 * ref + 1e-3 * np.convolve(rng.standard_normal(SR), np.ones(32) / 32, "same")
    return pred[None], ref[None]


def test_stft_distance_matches_dac_definition_on_quiet_content():
    pred, ref = quiet_music_pair()
    quiet = (numpy_magnitude(ref, 2048) < 1e-4).mean()
    assert quiet > 0.1, "the pair must exercise the clamp"
    expected = reference_stft_distance(pred, ref)
    got = float(stft_distance(torch.from_numpy(pred).float(), torch.from_numpy(ref).float()))
    assert got == pytest.approx(expected, rel=1e-5)


def test_mel_distance_matches_reference_on_quiet_content():
    pred, ref = quiet_music_pair(1)
    expected = reference_mel_distance(pred, ref)
    got = float(mel_distance(torch.from_numpy(pred).float(), torch.from_numpy(ref).float(), SR))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("metric", [stft_distance, lambda p, r: mel_distance(p, r, SR)])
def test_metrics_refuse_non_finite_audio(metric):
    audio = torch.zeros(1, 2, 4096)
    bad = audio.clone()
    bad[0, 0, 10] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        metric(bad, audio)


def test_metric_table_is_the_one_list_of_names():
    assert set(METRIC_BY_KEY) == {f"val/{name}" for name in METRICS}
    assert METRICS["si_sdr"].direction == "max" and METRICS["mel_distance"].direction == "min"


def test_rank_key_orders_best_first_and_missing_last():
    values = [3.0, float("nan"), 1.0, None, 2.0]
    assert sorted(values, key=lambda v: rank_key(v, "min"))[:3] == [1.0, 2.0, 3.0]
    assert sorted(values, key=lambda v: rank_key(v, "max"))[:3] == [3.0, 2.0, 1.0]
    assert all(v is None or math.isnan(v) for v in sorted(values, key=lambda v: rank_key(v, "max"))[3:])


def test_si_sdr_leaves_out_silent_target_channels():
    torch.manual_seed(0)
    target = torch.randn(2, 2, 8192)
    target[0, 1] = 0.0  # one silent channel
    prediction = target + 0.1 * torch.randn_like(target)
    value, count = audible_si_sdr(prediction, target)
    assert count == 3
    # ~20 dB for noise at -20 dB; the silent channel (which would read about -80 dB) is not in it
    assert 15 < float(value) < 25
    zero, none = audible_si_sdr(prediction, torch.zeros_like(target))
    assert none == 0 and float(zero) == 0.0


def test_si_sdr_matches_its_definition():
    torch.manual_seed(1)
    target = torch.randn(1, 1, 4096).double()
    prediction = 0.5 * target + 0.05 * torch.randn_like(target)
    t, p = target - target.mean(), prediction - prediction.mean()
    projection = (p * t).sum() / (t * t).sum() * t
    expected = 10 * torch.log10(projection.pow(2).sum() / (p - projection).pow(2).sum())
    value, _ = audible_si_sdr(prediction.float(), target.float())
    assert float(value) == pytest.approx(float(expected), abs=1e-3)
