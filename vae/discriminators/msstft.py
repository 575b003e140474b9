"""Multi-scale STFT discriminator (Encodec, Défossez et al. 2022).

Each sub-discriminator sees the complex STFT (real and imaginary planes, so phase is judged too)
at one FFT size. Convs stride along frequency and dilate along time, so the receptive field grows
in time without losing time resolution.
"""

from __future__ import annotations

import torch

from vae.discriminators.base import (
    Discriminator,
    LeakyConvStack,
    SubDiscriminator,
    complex_spectrogram,
    wn_conv2d,
)
from vae.discriminators.settings import MSSTFTConfig

TIME_DILATIONS = (1, 2, 4)


class STFTDiscriminator(SubDiscriminator):
    """Convs over ``[B, 2C, frames, bins]``; kernels (3 in time, 9 in frequency)."""

    def __init__(self, fft_size: int, channels: int, audio_channels: int) -> None:
        convs = [wn_conv2d(2 * audio_channels, channels, (3, 9), padding=(1, 4))]
        for dilation in TIME_DILATIONS:
            convs.append(wn_conv2d(channels, channels, (3, 9), stride=(1, 2),
                                   dilation=(dilation, 1), padding=(dilation, 4)))
        convs.append(wn_conv2d(channels, channels, (3, 3), padding=(1, 1)))
        super().__init__(LeakyConvStack(convs), wn_conv2d(channels, 1, (3, 3), padding=(1, 1)))
        self.fft_size = fft_size
        self.hop_length = max(1, fft_size // 4)
        # Not persistent: a function of fft_size, no need to store it in checkpoints.
        self.register_buffer("window", torch.hann_window(fft_size), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return complex_spectrogram(x, self.window, self.hop_length)


class MultiScaleSTFTDiscriminator(Discriminator):
    """One :class:`STFTDiscriminator` per FFT size (hop = FFT size / 4, Hann window)."""

    config_section = MSSTFTConfig

    def __init__(self, config: MSSTFTConfig, channels: int, audio_channels: int) -> None:
        super().__init__([STFTDiscriminator(n, channels, audio_channels) for n in config.fft_sizes],
                         audio_channels)
        self.fft_sizes = list(config.fft_sizes)
