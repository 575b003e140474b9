"""Multi-band multi-resolution STFT discriminator (DAC's "MRD", Kumar et al. 2023).

Like the multi-scale STFT discriminator, but each FFT size's complex spectrogram is cut into
frequency bands with a conv stack of their own, so low and high bands do not share weights
(their statistics differ a lot in music). The band outputs are joined along frequency before one
final conv gives the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vae.discriminators.base import (
    Discriminator,
    LeakyConvStack,
    complex_spectrogram,
    wn_conv2d,
)
from vae.discriminators.settings import MultibandConfig

FREQUENCY_DOWNSAMPLING_LAYERS = 3


def band_bin_ranges(bands: Sequence[tuple[float, float]], n_bins: int) -> list[tuple[int, int]]:
    """Fractions of Nyquist (checked by :class:`MultibandConfig`) → ``[start, stop)`` STFT bin
    ranges, each at least one bin wide."""
    ranges = []
    for low, high in bands:
        start = min(int(low * n_bins), n_bins - 1)
        stop = min(max(int(high * n_bins), start + 1), n_bins)
        ranges.append((start, stop))
    return ranges


def band_conv_stack(channels: int, audio_channels: int) -> LeakyConvStack:
    convs = [wn_conv2d(2 * audio_channels, channels, (3, 9), padding=(1, 4))]
    for _ in range(FREQUENCY_DOWNSAMPLING_LAYERS):
        convs.append(wn_conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)))
    convs.append(wn_conv2d(channels, channels, (3, 3), padding=(1, 1)))
    return LeakyConvStack(convs)


class BandSplitSTFTDiscriminator(nn.Module):
    """One FFT size: a conv stack per band, outputs concatenated along frequency, a final conv."""

    def __init__(self, fft_size: int, bands: Sequence[tuple[float, float]], channels: int,
                 audio_channels: int) -> None:
        super().__init__()
        self.fft_size = fft_size
        self.hop_length = max(1, fft_size // 4)
        self.bin_ranges = band_bin_ranges(bands, fft_size // 2 + 1)
        self.band_stacks = nn.ModuleList(
            band_conv_stack(channels, audio_channels) for _ in self.bin_ranges
        )
        self.post = wn_conv2d(channels, 1, (3, 3), padding=(1, 1))
        self.register_buffer("window", torch.hann_window(fft_size), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spectrogram = complex_spectrogram(x, self.window, self.hop_length)
        band_outputs, features = [], []
        for (start, stop), stack in zip(self.bin_ranges, self.band_stacks):
            band_output, band_features = stack(spectrogram[..., start:stop])
            band_outputs.append(band_output)
            features.extend(band_features)
        return self.post(torch.cat(band_outputs, dim=-1)), features


class MultiBandDiscriminator(Discriminator):
    """One :class:`BandSplitSTFTDiscriminator` per FFT size, all with the same bands."""

    config_section = MultibandConfig

    def __init__(self, config: MultibandConfig, channels: int, audio_channels: int) -> None:
        super().__init__(
            [BandSplitSTFTDiscriminator(n, config.bands, channels, audio_channels)
             for n in config.fft_sizes],
            audio_channels,
        )
        self.fft_sizes = list(config.fft_sizes)
        self.bands = [tuple(band) for band in config.bands]
