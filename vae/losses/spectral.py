"""Reconstruction losses in the frequency domain, computed in fp32 on shared spectrograms.

The STFT is linear, so the spectra of mid = (L+R)/2 and side = (L-R)/2 are formed from the left
and right spectra instead of running more FFTs; and the mel and STFT losses share the spectra of
every FFT size they have in common. Each loss returns one value per view ([V]: left, right, mid,
side — or one view for mono), averaged over the batch, for the stereo weighting to combine."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vae.dsp import magnitude, mel_filterbank, stft


class StereoSpectrograms:
    """Magnitude spectra of prediction and target per FFT size, computed once per step. The
    target's are computed without autograd: the backward pass only runs through the prediction."""

    def __init__(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.prediction = prediction.float()
        self.target = target.float()
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _view_magnitudes(signal: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = stft(signal, n_fft)  # [B, C, F, frames]
        if spec.shape[1] == 2:
            left, right = spec[:, 0:1], spec[:, 1:2]
            spec = torch.cat([spec, (left + right) / 2, (left - right) / 2], dim=1)
        return magnitude(spec)

    def magnitudes(self, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) magnitudes, each [B, V, F, frames]."""
        if n_fft not in self._cache:
            with torch.no_grad():
                target = self._view_magnitudes(self.target, n_fft)
            self._cache[n_fft] = (self._view_magnitudes(self.prediction, n_fft), target)
        return self._cache[n_fft]


def _per_view_mean(x: torch.Tensor) -> torch.Tensor:
    """[B, V, ...] → [V], reduced in place (no transposed copy)."""
    return x.mean(dim=[0, *range(2, x.dim())])


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over FFT sizes (Yamamoto et al. 2020)."""

    def __init__(self, fft_sizes: Sequence[int], spectral_convergence_weight: float = 1.0,
                 log_magnitude_weight: float = 1.0) -> None:
        super().__init__()
        self.fft_sizes = list(fft_sizes)
        self.spectral_convergence_weight = spectral_convergence_weight
        self.log_magnitude_weight = log_magnitude_weight

    def forward(self, spectra: StereoSpectrograms) -> torch.Tensor:
        total = 0.0
        for n_fft in self.fft_sizes:
            pred, target = spectra.magnitudes(n_fft)
            diff_norm = torch.linalg.vector_norm((target - pred).flatten(2), dim=2)  # [B, V]
            target_norm = torch.linalg.vector_norm(target.flatten(2), dim=2)
            convergence = (diff_norm / target_norm.clamp(min=1e-5)).mean(dim=0)
            log_l1 = _per_view_mean((torch.log(target) - torch.log(pred)).abs())  # target: no grad
            total = total + self.spectral_convergence_weight * convergence \
                + self.log_magnitude_weight * log_l1
        return total / len(self.fft_sizes)


class MultiScaleMelLoss(nn.Module):
    """L1 between log10 mel spectrograms (magnitude, slaney) at several windows, averaged."""

    def __init__(self, sample_rate: int, window_sizes: Sequence[int], n_mels: Sequence[int],
                 clamp_eps: float = 1e-5) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.scales = list(zip(window_sizes, n_mels))
        self.clamp_eps = clamp_eps

    def forward(self, spectra: StereoSpectrograms) -> torch.Tensor:
        total = 0.0
        for n_fft, n_mels in self.scales:
            pred, target = spectra.magnitudes(n_fft)
            bank = mel_filterbank(self.sample_rate, n_fft, n_mels, device=pred.device)
            pred_mel = torch.einsum("mf,bvft->bvmt", bank, pred)
            with torch.no_grad():
                target_log = torch.einsum("mf,bvft->bvmt", bank, target).clamp(min=self.clamp_eps).log10()
            log_diff = pred_mel.clamp(min=self.clamp_eps).log10() - target_log
            total = total + _per_view_mean(log_diff.abs())
        return total / len(self.scales)


def waveform_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute sample error over left and right."""
    return (prediction.float() - target.float()).abs().mean()
