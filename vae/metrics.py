"""Weight-independent evaluation metrics: the numbers a sweep ranks trials by.

Their definitions never depend on a searched hyperparameter, so trials with different loss weights
are comparable. ``mel_distance`` follows the definition descript-audio-codec reports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from vae.dsp import mel_filterbank, stft

MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
STFT_WINDOWS = (2048, 512)
CLAMP_EPS = 1e-5
SILENT_POWER = 1e-10  # mean square below which a target channel is silent (-100 dBFS)
ACTIVE_UNIT_THRESHOLD_NATS = 0.01

# Validation logs every metric under this prefix; evaluate prints the bare names.
VALIDATION_PREFIX = "val/"

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    """One weight-independent metric: its name, which direction is better, what it measures."""

    name: str
    direction: Direction
    definition: str
    unit: str = ""

    @property
    def key(self) -> str:
        """The name validation logs it under (``val/mel_distance``)."""
        return VALIDATION_PREFIX + self.name


# Distortions are measured twice: decoding the posterior mean (what a latent-diffusion user decodes)
# and a seeded posterior sample (what the KL rate pays for: only a sampled latent can be coded at
# the KL's rate, so a rate-distortion study pairs kl_kbps with the sampled distortion).
SAMPLED_SUFFIX = "_sampled"
_DISTORTIONS = (
    Metric("mel_distance", "min",
           "sum over 7 scales (windows 32..2048, hop/4) of L1 between log10 mel magnitudes "
           "(DAC's definition)"),
    Metric("stft_distance", "min",
           "windows 2048 and 512 (hop/4): L1 of log10 power + L1 of magnitude (DAC's definition)"),
    Metric("si_sdr", "max", "scale-invariant signal-to-distortion ratio over audible channels",
           "dB"),
)
DISTORTION_NAMES = tuple(m.name for m in _DISTORTIONS)


def _sampled(metric: Metric) -> Metric:
    return Metric(metric.name + SAMPLED_SUFFIX, metric.direction,
                  metric.definition + ", decoded from a seeded posterior sample", metric.unit)


# THE metric table: validation, evaluate, search-space checks, report, export and the app read it.
METRICS: dict[str, Metric] = {m.name: m for m in (
    *_DISTORTIONS,
    *(_sampled(m) for m in _DISTORTIONS),
    Metric("kl_kbps", "min",
           "latent rate: posterior KL per frame (summed over channels) x frame rate / ln 2 / 1000",
           "kbit/s"),
    Metric("active_units", "max", "latent channels whose mean KL exceeds 0.01 nats"),
)}
METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS.values()}


def rank_key(value: float | None, direction: Direction) -> tuple[int, float]:
    """Sort key putting the best value first for ``direction``; missing or non-finite values last."""
    if value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, value if direction == "min" else -value)


def _exact_magnitude(signal: torch.Tensor, n_fft: int) -> torch.Tensor:
    """|STFT| with no floor, in fp64. The metrics need no gradient, and a floor would hide the
    clamp below (a 1e-4 floor on |X| made the 1e-5 clamp of stft_distance a no-op on quiet bins).
    fp64 because an fp32 FFT's round-off (~1e-7 of the frame's energy) reaches the 1e-5 clamp on
    quiet bins of loud frames and moved the metric by 4e-5 relative; validation is a small cost."""
    return stft(signal, n_fft, dtype=torch.float64).abs()


def check_finite(**signals: torch.Tensor) -> None:
    """Refuse non-finite audio: one NaN would silently turn every mean it enters into NaN."""
    for name, signal in signals.items():
        if not torch.isfinite(signal).all():
            raise ValueError(f"{name} holds non-finite samples (NaN or inf): metrics are undefined")


@torch.no_grad()
def mel_distance(prediction: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Sum over 7 scales of mean |log10 mel(pred) − log10 mel(target)|; hop = window / 4."""
    check_finite(reference=target, reconstruction=prediction)
    total = torch.zeros((), device=prediction.device, dtype=torch.float64)
    for n_fft, n_mels in zip(MEL_WINDOWS, MEL_BANDS):
        filters = mel_filterbank(sample_rate, n_fft, n_mels, device=prediction.device).double()
        pred = (filters @ _exact_magnitude(prediction, n_fft)).clamp(min=CLAMP_EPS).log10()
        ref = (filters @ _exact_magnitude(target, n_fft)).clamp(min=CLAMP_EPS).log10()
        total = total + (pred - ref).abs().mean()
    return total.float()


@torch.no_grad()
def stft_distance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over windows 2048 and 512 of L1(log10 clamp(|X|, 1e-5)²) + L1(|X|), as DAC's
    MultiScaleSTFTLoss defines it."""
    check_finite(reference=target, reconstruction=prediction)
    total = torch.zeros((), device=prediction.device, dtype=torch.float64)
    for n_fft in STFT_WINDOWS:
        pred = _exact_magnitude(prediction, n_fft)
        ref = _exact_magnitude(target, n_fft)
        log_power = (pred.clamp(min=CLAMP_EPS).pow(2).log10() - ref.clamp(min=CLAMP_EPS).pow(2).log10())
        total = total + log_power.abs().mean() + (pred - ref).abs().mean()
    return total.float()


@torch.no_grad()
def audible_si_sdr(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean scale-invariant SDR in dB (torchmetrics', zero-mean) over the channels of each item
    whose target is audible, and how many those are. Higher is better.

    SI-SDR is undefined on a silent target (every prediction scores the same floor, -80 dB with
    the usual eps), so such channels are left out. With none left the mean is 0 and the count 0:
    callers weight means by the count, and a count of 0 contributes nothing."""
    check_finite(reference=target, reconstruction=prediction)
    audible = target.float().pow(2).mean(dim=-1) > SILENT_POWER
    count = int(audible.sum())
    if count == 0:
        return torch.zeros((), device=prediction.device), 0
    values = scale_invariant_signal_distortion_ratio(prediction.float()[audible], target.float()[audible],
                                                     zero_mean=True)
    return values.mean(), count


def distortions(prediction: torch.Tensor, target: torch.Tensor, sample_rate: int,
                suffix: str = "") -> dict[str, tuple[torch.Tensor, int]]:
    """Every distortion of the table for a batch ``[B, C, T]``: name (+ ``suffix``) -> (mean value,
    weight for averaging across batches: items, or audible channels for si_sdr)."""
    si_sdr_value, audible = audible_si_sdr(prediction, target)
    items = prediction.shape[0]
    return {"mel_distance" + suffix: (mel_distance(prediction, target, sample_rate), items),
            "stft_distance" + suffix: (stft_distance(prediction, target), items),
            "si_sdr" + suffix: (si_sdr_value, audible)}


def active_units(kl_per_channel: torch.Tensor) -> int:
    """Latent channels carrying information: mean KL above 0.01 nats (posterior-collapse watch)."""
    return int((kl_per_channel > ACTIVE_UNIT_THRESHOLD_NATS).sum().item())
