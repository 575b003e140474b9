"""Building blocks shared by the encoder and decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


def maybe_weight_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return _weight_norm(module) if enabled else module


class Snake(nn.Module):
    """x + sin²(αx)/α with a learnt α per channel: a periodic bias that suits audio (BigVGAN, DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        return x + torch.sin(alpha * x).pow(2) / (alpha + 1e-9)


def activation(name: str, channels: int, *, inplace: bool = False) -> nn.Module:
    """``inplace`` overwrites its input (ELU only: Snake's backward needs its input). Only safe
    on a tensor nothing else reads, such as a convolution's output: saves a write of it."""
    if name == "snake":
        return Snake(channels)
    if name == "elu":
        return nn.ELU(inplace=inplace)
    raise ValueError(f"unknown activation {name!r}")


def conv1d(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, dilation: int = 1,
           weight_norm: bool = True) -> nn.Module:
    """'Same' padding for stride 1; for strided convs the caller picks kernel = 2 * stride."""
    padding = (kernel - 1) * dilation // 2 if stride == 1 else (stride + 1) // 2
    conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, dilation=dilation, padding=padding)
    return maybe_weight_norm(conv, weight_norm)


def conv_transpose1d(in_ch: int, out_ch: int, stride: int, *, weight_norm: bool = True) -> nn.Module:
    """Upsamples by exactly ``stride`` (kernel 2·stride), the inverse shape of ``conv1d`` above."""
    conv = nn.ConvTranspose1d(in_ch, out_ch, 2 * stride, stride=stride,
                              padding=(stride + 1) // 2, output_padding=stride % 2)
    return maybe_weight_norm(conv, weight_norm)


class ResidualUnit(nn.Module):
    """act → dilated conv → act → 1x1 conv, added to the input. The first activation must keep
    its input (the residual adds it); the second may overwrite the conv output it reads."""

    def __init__(self, channels: int, dilation: int, kernel: int, act: str, weight_norm: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            activation(act, channels),
            conv1d(channels, channels, kernel, dilation=dilation, weight_norm=weight_norm),
            activation(act, channels, inplace=True),
            conv1d(channels, channels, 1, weight_norm=weight_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
