"""Waveform → latent posterior parameters."""

from __future__ import annotations

import torch
from torch import nn

from vae.config import ModelConfig
from vae.model.layers import LSTMBlock, ResidualUnit, activation, conv1d


class EncoderBlock(nn.Sequential):
    """Residual units at the input width, then a strided conv that downsamples by ``stride``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cfg: ModelConfig) -> None:
        units = [ResidualUnit(in_ch, d, cfg.kernel_size, cfg.activation, cfg.weight_norm, cfg.causal)
                 for d in cfg.residual_dilations]
        super().__init__(
            *units,
            activation(cfg.activation, in_ch),
            conv1d(in_ch, out_ch, 2 * stride, stride=stride, weight_norm=cfg.weight_norm,
                   causal=cfg.causal),
        )


class Encoder(nn.Module):
    """[B, audio_channels, T] → [B, 2·latent_dim, T / hop] (mean and pre-scale of the posterior).
    With ``lstm_layers`` an LSTM (plus skip) runs over the downsampled frames (EnCodec)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_multipliers]
        layers: list[nn.Module] = [conv1d(cfg.audio_channels, widths[0], cfg.kernel_size,
                                          weight_norm=cfg.weight_norm, causal=cfg.causal)]
        for i, stride in enumerate(cfg.strides):
            layers.append(EncoderBlock(widths[i], widths[i + 1], stride, cfg))
        if cfg.lstm_layers:
            layers.append(LSTMBlock(widths[-1], cfg.lstm_layers))
        layers += [
            activation(cfg.activation, widths[-1]),
            conv1d(widths[-1], 2 * cfg.latent_dim, 3, weight_norm=cfg.weight_norm, causal=cfg.causal),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio)
