"""The KL term of the VAE objective, with free bits."""

from __future__ import annotations

import torch

from vae.model.bottleneck import Posterior, free_bits_kl


def kl_loss(posterior: Posterior, free_bits: float) -> torch.Tensor:
    """Nats per latent frame, summed over channels, each channel floored at ``free_bits``."""
    return free_bits_kl(posterior.kl_per_channel().float(), free_bits)
