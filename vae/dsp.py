"""Signal processing in torch (torchaudio is not available everywhere this runs)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

# Slaney's mel scale (librosa's default, used by DAC's metrics): linear below 1 kHz, log above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    hz = torch.as_tensor(hz, dtype=torch.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(hz, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


@lru_cache(maxsize=64)
def _mel_filterbank_cpu(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                        f_max: float) -> torch.Tensor:
    # Cached and shared: it must not be an inference tensor even when first built under
    # inference mode (validation), or training could not use it afterwards.
    with torch.inference_mode(False):
        return _build_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)


def _build_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                          f_max: float) -> torch.Tensor:
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(float(hz_to_mel(torch.tensor(f_min))),
                                float(hz_to_mel(torch.tensor(f_max))), n_mels + 2,
                                dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    widths = hz_points[1:] - hz_points[:-1]
    ramps = hz_points[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Slaney area normalisation: each triangle has unit area in Hz, so bands of any width weigh alike.
    weights = weights * (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.to(torch.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters, slaney scale and norm (as librosa's default)."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    return _mel_filterbank_cpu(sample_rate, n_fft, n_mels, float(f_min), float(f_max)).to(device)


def stft(signal: torch.Tensor, n_fft: int, hop_length: int | None = None,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Complex STFT of [..., T] with a Hann window of n_fft and hop n_fft / 4 by default, computed
    in ``dtype`` (fp32 unless asked: fp16/bf16 FFTs lose too much)."""
    hop_length = hop_length or max(n_fft // 4, 1)
    shape = signal.shape
    flat = signal.reshape(-1, shape[-1]).to(dtype)
    window = torch.hann_window(n_fft, device=signal.device, dtype=dtype)
    spec = torch.stft(flat, n_fft, hop_length=hop_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def magnitude(spec: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|spec| floored at sqrt(eps), so the gradient is finite (zero) at silence. Equal to
    sqrt(max(re² + im², eps)), in one complex-abs kernel instead of four elementwise passes."""
    return spec.abs().clamp(min=eps**0.5)


def mel_spectrogram(signal: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Mel-filtered STFT magnitude: [..., n_mels, frames]."""
    mag = magnitude(stft(signal, n_fft))
    return torch.matmul(mel_filterbank(sample_rate, n_fft, n_mels, device=signal.device), mag)
