"""Latent → waveform, the mirror of the encoder."""

from __future__ import annotations

import torch
from torch import nn

from vae.config import ModelConfig
from vae.model.layers import LSTMBlock, ResidualUnit, activation, conv1d, conv_transpose1d


class DecoderBlock(nn.Sequential):
    """A transposed conv that upsamples by ``stride``, then residual units at the output width."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cfg: ModelConfig) -> None:
        units = [ResidualUnit(out_ch, d, cfg.kernel_size, cfg.activation, cfg.weight_norm, cfg.causal)
                 for d in cfg.residual_dilations]
        super().__init__(
            activation(cfg.activation, in_ch),
            conv_transpose1d(in_ch, out_ch, stride, weight_norm=cfg.weight_norm, causal=cfg.causal),
            *units,
        )


class Decoder(nn.Module):
    """[B, latent_dim, frames] → [B, audio_channels, frames · hop]. With ``lstm_layers`` an LSTM
    (plus skip) runs over the frames after the first conv (EnCodec)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_multipliers]
        widths = widths[::-1]
        layers: list[nn.Module] = [conv1d(cfg.latent_dim, widths[0], cfg.kernel_size,
                                          weight_norm=cfg.weight_norm, causal=cfg.causal)]
        if cfg.lstm_layers:
            layers.append(LSTMBlock(widths[0], cfg.lstm_layers))
        for i, stride in enumerate(reversed(cfg.strides)):
            layers.append(DecoderBlock(widths[i], widths[i + 1], stride, cfg))
        layers += [
            activation(cfg.activation, widths[-1]),
            conv1d(widths[-1], cfg.audio_channels, cfg.kernel_size, weight_norm=cfg.weight_norm,
                   causal=cfg.causal),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)
