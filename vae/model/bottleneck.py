"""Diagonal Gaussian posterior, reparameterised sampling, KL to N(0, I) and free bits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Posterior:
    mean: torch.Tensor  # [B, latent_dim, frames]
    std: torch.Tensor  # same shape, > 0

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw; ``generator`` makes it reproducible (seeded evaluation)."""
        noise = torch.randn(self.std.shape, generator=generator, device=self.std.device,
                            dtype=self.std.dtype)
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) in nats, per latent channel and frame: [B, latent_dim, frames]."""
        var = self.std.pow(2)
        return 0.5 * (self.mean.pow(2) + var - 1.0 - torch.log(var))

    def kl_per_channel(self) -> torch.Tensor:
        """Mean KL of each channel over batch and frames, nats per frame: [latent_dim]."""
        return self.kl().mean(dim=(0, 2))


class GaussianBottleneck(nn.Module):
    """Splits the encoder output into mean and scale; scale = softplus(·) + min_std keeps it > 0."""

    def __init__(self, min_std: float) -> None:
        super().__init__()
        self.min_std = min_std

    def forward(self, encoded: torch.Tensor) -> Posterior:
        mean, pre_scale = encoded.chunk(2, dim=1)
        return Posterior(mean=mean, std=F.softplus(pre_scale) + self.min_std)


def free_bits_kl(kl_per_channel: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Sum over channels of max(KL_c, free_bits): below the floor a channel gets no KL gradient,
    so the model may spend that much information per channel for free (Kingma et al. 2016)."""
    if free_bits <= 0:
        return kl_per_channel.sum()
    return torch.clamp(kl_per_channel, min=free_bits).sum()


def kl_to_kbps(kl_nats_per_frame: float, frames_per_second: float) -> float:
    """Latent rate: nats per frame (summed over channels) → kilobits per second."""
    return kl_nats_per_frame * frames_per_second / math.log(2) / 1000.0
