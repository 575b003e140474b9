"""The weight-independent evaluation metrics' tensor code: the numbers a sweep ranks trials by.

Their definitions never depend on a searched hyperparameter, so trials with different loss weights
are comparable. The table naming them (direction, definition, ranking rule) is
``vae/metric_table.py``, which needs no torch. ``mel_distance`` follows the definition
descript-audio-codec reports."""

from __future__ import annotations

import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from vae.dsp import mel_filterbank, stft
from vae.metric_table import ACTIVE_UNIT_THRESHOLD_NATS

MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
STFT_WINDOWS = (2048, 512)
CLAMP_EPS = 1e-5
SILENT_POWER = 1e-10  # mean square below which a target channel is silent (-100 dBFS)


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
    """Latent channels carrying information: mean KL above the threshold (posterior-collapse watch)."""
    return int((kl_per_channel > ACTIVE_UNIT_THRESHOLD_NATS).sum().item())
