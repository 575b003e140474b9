"""Multi-period discriminator (HiFi-GAN, Kong et al. 2020).

Each sub-discriminator folds the waveform into rows of ``period`` samples and convolves down the
columns only (kernels ``(k, 1)``), so it judges the signal's structure at that period. Prime
periods overlap as little as possible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae.discriminators.base import (
    Discriminator,
    LeakyConvStack,
    SubDiscriminator,
    capped_width,
    wn_conv2d,
)
from vae.discriminators.settings import MPDConfig

WIDTH_MULTIPLIERS = (1, 4, 16, 32)  # HiFi-GAN's 32-128-512-1024 with channels = 32


class PeriodDiscriminator(SubDiscriminator):
    """Strided ``(5, 1)`` convs over the waveform folded to ``[B, C, T / period, period]``."""

    def __init__(self, period: int, channels: int, audio_channels: int) -> None:
        convs = []
        in_width = audio_channels
        for multiplier in WIDTH_MULTIPLIERS:
            out_width = capped_width(channels, multiplier)
            convs.append(wn_conv2d(in_width, out_width, (5, 1), stride=(3, 1), padding=(2, 0)))
            in_width = out_width
        convs.append(wn_conv2d(in_width, in_width, (5, 1), padding=(2, 0)))
        super().__init__(LeakyConvStack(convs), wn_conv2d(in_width, 1, (3, 1), padding=(1, 0)))
        self.period = period

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        remainder = length % self.period
        if remainder:
            # Reflect rather than zero-pad so the last row is not half silence.
            x = F.pad(x, (0, self.period - remainder), mode="reflect")
        return x.reshape(batch, channels, -1, self.period)


class MultiPeriodDiscriminator(Discriminator):
    """One :class:`PeriodDiscriminator` per period."""

    config_section = MPDConfig

    def __init__(self, config: MPDConfig, channels: int, audio_channels: int) -> None:
        super().__init__([PeriodDiscriminator(p, channels, audio_channels) for p in config.periods],
                         audio_channels)
        self.periods = list(config.periods)
