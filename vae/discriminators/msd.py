"""Multi-scale waveform discriminator (MelGAN, Kumar et al. 2019).

The same architecture runs on the waveform and on versions average-pooled by 2, 4, ...: coarser
scales see longer context with the same receptive field. Grouped strided convs keep a 1024-wide
stack affordable.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from vae.discriminators.base import (
    Discriminator,
    LeakyConvStack,
    SubDiscriminator,
    capped_width,
    grouped_conv_groups,
    wn_conv1d,
)
from vae.discriminators.settings import MSDConfig

DOWNSAMPLING_LAYERS = 4  # each strides by 4: 256x fewer frames at the logits than at the input


class ScaleDiscriminator(SubDiscriminator):
    """One MelGAN discriminator: wide first conv, grouped stride-4 convs, then a 1-channel conv."""

    def __init__(self, channels: int, audio_channels: int) -> None:
        widths = [capped_width(channels, 4**i) for i in range(DOWNSAMPLING_LAYERS + 1)]
        # Reflect padding on the first conv avoids a fake edge at the chunk boundaries.
        convs = [wn_conv1d(audio_channels, widths[0], 15, padding=7, padding_mode="reflect")]
        for in_width, out_width in zip(widths, widths[1:]):
            convs.append(wn_conv1d(in_width, out_width, 41, stride=4, padding=20,
                                   groups=grouped_conv_groups(in_width, out_width)))
        convs.append(wn_conv1d(widths[-1], widths[-1], 5, padding=2))
        super().__init__(LeakyConvStack(convs), wn_conv1d(widths[-1], 1, 3, padding=1))


class MultiScaleDiscriminator(Discriminator):
    """``scales`` MelGAN discriminators, the k-th on the waveform average-pooled by 2 k times."""

    config_section = MSDConfig

    def __init__(self, config: MSDConfig, channels: int, audio_channels: int) -> None:
        super().__init__([ScaleDiscriminator(channels, audio_channels) for _ in range(config.scales)],
                         audio_channels)
        self.downsample = nn.AvgPool1d(4, stride=2, padding=1, count_include_pad=False)

    def views(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for index in range(len(self)):
            if index > 0:
                x = self.downsample(x)
            yield x
