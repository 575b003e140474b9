"""What every discriminator returns, and the small pieces they share.

A discriminator is a set of sub-discriminators that each look at the same waveform in their own
way (a time scale, a period, an FFT size). ``forward(x)`` takes a waveform ``[B, C, T]`` and
returns ``(logits, feature_maps)``: one logit map per sub-discriminator, and per sub-discriminator
the list of its hidden activations (used by the feature-matching loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from vae.config_base import Section

# HiFi-GAN and DAC use 0.1 in every discriminator; one value keeps the families comparable.
LEAKY_RELU_SLOPE = 0.1
# Widths stop growing here: wider layers cost a lot and, per MelGAN/HiFi-GAN, buy little.
MAX_CHANNELS = 1024

Logits = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]
DiscriminatorOutput = tuple[Logits, FeatureMaps]


def wn_conv1d(*args, **kwargs) -> nn.Module:
    """``nn.Conv1d`` with weight normalisation (the norm every GAN-vocoder discriminator uses)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv2d(*args, **kwargs) -> nn.Module:
    """``nn.Conv2d`` with weight normalisation."""
    return weight_norm(nn.Conv2d(*args, **kwargs))


def capped_width(channels: int, multiplier: int) -> int:
    return min(channels * multiplier, MAX_CHANNELS)


def grouped_conv_groups(in_channels: int, out_channels: int, channels_per_group: int = 4) -> int:
    """Groups for a MelGAN-style grouped conv: about ``channels_per_group`` inputs per group.

    The result divides both widths, so any ``channels`` setting gives a valid conv."""
    target = max(1, in_channels // channels_per_group)
    common = math.gcd(in_channels, out_channels)
    return max(g for g in range(1, min(target, common) + 1) if common % g == 0)


class LeakyConvStack(nn.Module):
    """Convs each followed by a leaky ReLU; returns the last activation and all of them."""

    def __init__(self, convs: Iterable[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAKY_RELU_SLOPE)
            features.append(x)
        return x, features


class SubDiscriminator(nn.Module):
    """A hidden conv stack and a linear post conv giving one logit map.

    Feature maps are the hidden activations only: the logits already get the adversarial loss."""

    def __init__(self, hidden: LeakyConvStack, post: nn.Module) -> None:
        super().__init__()
        self.hidden = hidden
        self.post = post

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = self.hidden(self.prepare(x))
        return self.post(x), features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The waveform ``[B, C, T]`` as the first conv wants it; identity by default."""
        return x


class Discriminator(nn.Module):
    """Base of every discriminator: runs each sub-discriminator on its view of the waveform.

    A subclass names its settings section (from settings.py) in ``config_section``, the one its
    registry entry names (mounted at ``adversarial.<registry name>``), and is built as
    ``cls(section, channels, audio_channels)``: ``channels`` (``adversarial.channels``) and
    ``audio_channels`` (``model.audio_channels``) are shared by every discriminator, so no
    section repeats them.
    """

    config_section: ClassVar[type[Section]]

    def __init__(self, sub_discriminators: Iterable[nn.Module], audio_channels: int) -> None:
        super().__init__()
        self.sub_discriminators = nn.ModuleList(sub_discriminators)
        self.audio_channels = audio_channels

    def __len__(self) -> int:
        return len(self.sub_discriminators)

    def views(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The input each sub-discriminator sees, in order; the same waveform by default."""
        for _ in self.sub_discriminators:
            yield x

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        if x.dim() != 3 or x.shape[1] != self.audio_channels:
            raise ValueError(
                f"{type(self).__name__} expects a waveform [batch, {self.audio_channels}, time], "
                f"got shape {tuple(x.shape)}"
            )
        logits: Logits = []
        feature_maps: FeatureMaps = []
        for sub, view in zip(self.sub_discriminators, self.views(x)):
            logit, features = sub(view)
            logits.append(logit)
            feature_maps.append(features)
        return logits, feature_maps


def complex_spectrogram(x: torch.Tensor, window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Waveform ``[B, C, T]`` → ``[B, 2C, frames, bins]``: each channel's STFT as real, imag planes.

    Autocast is off and half-precision input is lifted to fp32: FFTs in fp16/bf16 lose too much
    precision and cuFFT only supports power-of-two sizes in half precision. ``normalized=True``
    keeps magnitudes comparable across FFT sizes; zero (not reflect) centre padding works for
    inputs shorter than half the FFT size.
    """
    batch, channels, _ = x.shape
    n_fft = window.shape[-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        spec = torch.stft(
            x.reshape(batch * channels, -1), n_fft=n_fft, hop_length=hop_length,
            window=window.to(x.dtype), center=True, pad_mode="constant", normalized=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec)  # [B*C, bins, frames, 2]
    bins, frames = spec.shape[1], spec.shape[2]
    spec = spec.reshape(batch, channels, bins, frames, 2).permute(0, 1, 4, 3, 2)
    return spec.reshape(batch, 2 * channels, frames, bins)
