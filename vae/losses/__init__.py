"""Named, weighted losses: every term has a name (logged as ``train/<name>``) and one weight key."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vae.config import LossConfig
from vae.losses.spectral import (MultiResolutionSTFTLoss, MultiScaleMelLoss, StereoSpectrograms,
                                 waveform_l1)
from vae.losses.stereo import stereo_weighted
from vae.model.bottleneck import Posterior, free_bits_kl

# Terms computed on the posterior rather than on the reconstruction: the balancer
# (vae/losses/balancer.py) leaves them to the ordinary weighted sum.
ENCODER_TERMS = frozenset({"kl"})


class ReconstructionLoss(nn.Module):
    """The VAE's own terms: ``stft``, ``mel``, ``waveform`` and ``kl``, unweighted.

    Terms whose weight is zero are not computed at all (no cost, no log line)."""

    def __init__(self, cfg: LossConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.spectral_terms = nn.ModuleDict({
            "stft": MultiResolutionSTFTLoss(cfg.stft.fft_sizes, cfg.stft.spectral_convergence_weight,
                                            cfg.stft.log_magnitude_weight),
            "mel": MultiScaleMelLoss(sample_rate, cfg.mel.window_sizes, cfg.mel.n_mels),
        })

    def weights(self, kl_weight: float) -> dict[str, float]:
        return {"stft": self.cfg.stft.weight, "mel": self.cfg.mel.weight,
                "waveform": self.cfg.waveform.weight, "kl": kl_weight}

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, posterior: Posterior,
                kl_weight: float) -> dict[str, torch.Tensor]:
        weights = self.weights(kl_weight)
        stereo = self.cfg.stereo
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(prediction.device.type, enabled=False):  # spectral losses in fp32
            spectra = StereoSpectrograms(prediction, target)
            for name, term in self.spectral_terms.items():
                if weights[name] > 0:
                    losses[name] = stereo_weighted(term(spectra), stereo.left_right_weight,
                                                   stereo.mid_side_weight)
            if weights["waveform"] > 0:
                losses["waveform"] = waveform_l1(prediction, target)
        # KL is always computed: it is the rate, worth logging even while its weight is 0.
        losses["kl"] = free_bits_kl(posterior.kl_per_channel().float(), self.cfg.kl.free_bits)
        return losses


def weighted_sum(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    missing = set(losses) - set(weights)
    if missing:
        raise KeyError(f"no weight for loss term(s) {sorted(missing)}")
    return sum(weights[name] * value for name, value in losses.items())  # type: ignore[return-value]


__all__ = ["ENCODER_TERMS", "ReconstructionLoss", "weighted_sum"]
