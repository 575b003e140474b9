"""The audio VAE: encoder → Gaussian bottleneck → decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vae.config import ModelConfig
from vae.model.bottleneck import GaussianBottleneck, Posterior
from vae.model.decoder import Decoder
from vae.model.encoder import Encoder


@dataclass
class VAEOutput:
    reconstruction: torch.Tensor  # [B, C, T], same length as the input
    posterior: Posterior
    latent: torch.Tensor  # the sample (or mean) that was decoded


class AudioVAE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.bottleneck = GaussianBottleneck(cfg.min_std)
        self.decoder = Decoder(cfg)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        remainder = audio.shape[-1] % self.hop_length
        return F.pad(audio, (0, self.hop_length - remainder)) if remainder else audio

    def encode(self, audio: torch.Tensor) -> Posterior:
        """[B, C, T] → posterior over [B, latent_dim, ceil(T / hop)] (right-padded with zeros)."""
        return self.bottleneck(self.encoder(self._pad(audio)))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def forward(self, audio: torch.Tensor, sample: bool | None = None) -> VAEOutput:
        """Samples the posterior in training mode and decodes its mean in eval mode, unless told."""
        posterior = self.encode(audio)
        sample = self.training if sample is None else sample
        latent = posterior.sample() if sample else posterior.mean
        reconstruction = self.decode(latent)[..., : audio.shape[-1]]
        return VAEOutput(reconstruction, posterior, latent)
