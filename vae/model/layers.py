"""Building blocks shared by the encoder and decoder.

``conv1d`` and ``conv_transpose1d`` are the one place that decides padding: centred ('same')
for today's models, left-only for causal ones (``model.causal``), where output sample t depends on
input samples <= t. ``vae.model.streaming`` reads the causal modules' attributes to know what
state a chunk needs from the previous one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class CausalConv1d(nn.Conv1d):
    """Zero-pads ``left_padding`` = effective kernel − stride samples on the left only: output
    frame i sees input samples < (i + 1)·stride, and T inputs give T / stride outputs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.left_padding = (self.kernel_size[0] - 1) * self.dilation[0] + 1 - self.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_padding, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Unpadded transposed conv with its last ``kernel − stride`` samples trimmed: output sample t
    sees input frames <= t / stride, and F frames give F·stride samples."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.overlap = self.kernel_size[0] - self.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y[..., : y.shape[-1] - self.overlap]


def conv1d(in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, dilation: int = 1,
           weight_norm: bool = True, causal: bool = False) -> nn.Module:
    """'Same' padding for stride 1; for strided convs the caller picks kernel = 2 * stride."""
    if causal:
        conv = CausalConv1d(in_ch, out_ch, kernel, stride=stride, dilation=dilation)
    else:
        padding = (kernel - 1) * dilation // 2 if stride == 1 else (stride + 1) // 2
        conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, dilation=dilation, padding=padding)
    return maybe_weight_norm(conv, weight_norm)


def conv_transpose1d(in_ch: int, out_ch: int, stride: int, *, weight_norm: bool = True,
                     causal: bool = False) -> nn.Module:
    """Upsamples by exactly ``stride`` (kernel 2·stride), the inverse shape of ``conv1d`` above."""
    if causal:
        conv = CausalConvTranspose1d(in_ch, out_ch, 2 * stride, stride=stride)
    else:
        conv = nn.ConvTranspose1d(in_ch, out_ch, 2 * stride, stride=stride,
                                  padding=(stride + 1) // 2, output_padding=stride % 2)
    return maybe_weight_norm(conv, weight_norm)


class ResidualUnit(nn.Module):
    """act → dilated conv → act → 1x1 conv, added to the input. The first activation must keep
    its input (the residual adds it); the second may overwrite the conv output it reads."""

    def __init__(self, channels: int, dilation: int, kernel: int, act: str, weight_norm: bool,
                 causal: bool = False) -> None:
        super().__init__()
        self.block = nn.Sequential(
            activation(act, channels),
            conv1d(channels, channels, kernel, dilation=dilation, weight_norm=weight_norm,
                   causal=causal),
            activation(act, channels, inplace=True),
            conv1d(channels, channels, 1, weight_norm=weight_norm, causal=causal),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class LSTMBlock(nn.Module):
    """An LSTM over time added to its input (EnCodec's SLSTM): [B, C, frames] → same shape.
    Unidirectional, so causal; ``step`` carries its (h, c) state from one chunk to the next."""

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, layers, batch_first=True)

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(x.transpose(1, 2), state)
        return x + out.transpose(1, 2), state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x)[0]
