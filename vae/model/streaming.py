"""Exact streaming of causal models: what a chunk needs from the previous one.

The state is explicit (EnCodec-style): ``StreamingEncoder``/``StreamingDecoder`` mirror the
model's layers with small stateful steps and never touch the modules' own state. Per layer:

* a convolution (``CausalConv1d``) keeps the last ``effective kernel − stride`` input samples,
  which its next outputs read (exactly the zeros it pads on the left at the start), plus any
  leftover that does not yet make a whole stride;
* a transposed convolution keeps its overlap tail (``kernel − stride`` samples of partial sums,
  without the bias): the next frames' outputs add onto it;
* an LSTM keeps its (h, c);
* activations, the residual skips and the Gaussian bottleneck are pointwise: no state.

So any sequence of chunk sizes gives the offline ``model.encode``/``model.decode`` result up to
float rounding. Weights are read once, when a streamer is built. The encoder emits frame i once
sample (i + 1)·hop − 1 has arrived; the decoder turns each frame into hop samples at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vae.model.autoencoder import AudioVAE
from vae.model.layers import (CausalConv1d, CausalConvTranspose1d, LSTMBlock, ResidualUnit,
                              Snake)


class StreamingError(ValueError):
    """A stream used in a way the model cannot follow; the message says what was expected."""


class _Sequence:
    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps

    def push(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step.push(x)
        return x


class _Residual:
    def __init__(self, inner: _Sequence) -> None:
        self.inner = inner

    def push(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner.push(x)  # stride 1 inside: as many samples out as in


class _Pointwise:
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def push(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _Conv:
    def __init__(self, conv: CausalConv1d) -> None:
        self.weight, self.bias = conv.weight.detach(), conv.bias.detach()
        self.stride, self.dilation = conv.stride[0], conv.dilation[0]
        self.span = (conv.kernel_size[0] - 1) * self.dilation + 1
        self.pending = self.weight.new_zeros(1, conv.in_channels, conv.left_padding)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        pending = torch.cat([self.pending, x], dim=-1)
        outputs = max(0, (pending.shape[-1] - self.span) // self.stride + 1)
        self.pending = pending[..., outputs * self.stride:]
        if not outputs:
            return x.new_zeros(1, self.weight.shape[0], 0)
        used = pending[..., : (outputs - 1) * self.stride + self.span]
        return F.conv1d(used, self.weight, self.bias, self.stride, 0, self.dilation)


class _ConvTranspose:
    def __init__(self, conv: CausalConvTranspose1d) -> None:
        self.weight, self.bias = conv.weight.detach(), conv.bias.detach()[:, None]
        self.stride = conv.stride[0]
        self.tail = self.weight.new_zeros(1, conv.out_channels, conv.overlap)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if not x.shape[-1]:
            return x.new_zeros(1, self.tail.shape[1], 0)
        y = F.conv_transpose1d(x, self.weight, None, self.stride)
        y[..., : self.tail.shape[-1]] += self.tail
        ready = x.shape[-1] * self.stride
        self.tail = y[..., ready:]
        return y[..., :ready] + self.bias


class _LSTM:
    def __init__(self, block: LSTMBlock) -> None:
        self.block, self.state = block, None

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if not x.shape[-1]:
            return x
        y, self.state = self.block.step(x, self.state)
        return y


_Step = _Sequence | _Residual | _Pointwise | _Conv | _ConvTranspose | _LSTM


def _stateful(module: nn.Module) -> _Step:
    """The streaming step of one layer of a causal model (see the module docstring)."""
    if isinstance(module, nn.Sequential):
        return _Sequence([_stateful(child) for child in module])
    if isinstance(module, ResidualUnit):
        return _Residual(_stateful(module.block))
    if isinstance(module, CausalConv1d):
        return _Conv(module)
    if isinstance(module, CausalConvTranspose1d):
        return _ConvTranspose(module)
    if isinstance(module, LSTMBlock):
        return _LSTM(module)
    if isinstance(module, (nn.ELU, Snake)):
        return _Pointwise(module)
    raise TypeError(f"no streaming state is known for {type(module).__name__}")


def _device(model: AudioVAE) -> torch.device:
    return next(model.parameters()).device


def _require_causal(model: AudioVAE) -> None:
    if not model.config.causal:
        raise StreamingError("this model is not causal (model.causal: false): its convolutions "
                             "look ahead, so it cannot be streamed; use chunked inference, or "
                             "train a model with model.causal: true")


def _check_chunk(chunk: object, what: str, rows: int, row_name: str) -> None:
    expected = f"a float32 torch.Tensor [{row_name}={rows}, n]"
    if not isinstance(chunk, torch.Tensor):
        raise StreamingError(f"{what}: expected {expected}; got {type(chunk).__name__}")
    if chunk.ndim != 2 or chunk.shape[0] != rows or chunk.dtype != torch.float32:
        raise StreamingError(f"{what}: expected {expected}; got {str(chunk.dtype)[6:]} "
                             f"{list(chunk.shape)}")


class StreamingEncoder:
    """Audio ``[channels, n]`` in chunks of any size → posterior frames as they complete.
    Batch 1, under inference mode on the model's device; results come back on the CPU."""

    def __init__(self, model: AudioVAE) -> None:
        _require_causal(model)
        self.model, self.device = model, _device(model)
        with torch.inference_mode():
            self.encoder = _stateful(model.encoder.net)
        self.samples = 0
        self.flushed = False

    @torch.inference_mode()
    def push(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` ``[latent_dim, k]`` of the k frames this chunk completes (k may be 0)."""
        if self.flushed:
            raise StreamingError("audio chunk: the stream was flushed; start a new StreamingEncoder")
        _check_chunk(audio, "audio chunk", self.model.config.audio_channels, "channels")
        self.samples += audio.shape[-1]
        posterior = self.model.bottleneck(self.encoder.push(audio[None].to(self.device)))
        return posterior.mean[0].cpu(), posterior.std[0].cpu()

    def flush(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last partial hop, right-padded with zeros like ``AudioVAE.encode``; ends the stream."""
        short = -self.samples % self.model.hop_length
        last = self.push(torch.zeros(self.model.config.audio_channels, short))
        self.flushed = True
        return last


class StreamingDecoder:
    """Latent frames ``[latent_dim, k]`` in chunks of any size → audio ``[channels, k·hop]``.
    Batch 1, under inference mode on the model's device; results come back on the CPU."""

    def __init__(self, model: AudioVAE) -> None:
        _require_causal(model)
        self.model, self.device = model, _device(model)
        with torch.inference_mode():
            self.decoder = _stateful(model.decoder.net)

    @torch.inference_mode()
    def push(self, latent: torch.Tensor) -> torch.Tensor:
        _check_chunk(latent, "latent chunk", self.model.config.latent_dim, "latent_dim")
        return self.decoder.push(latent[None].to(self.device))[0].cpu()


# ---- receptive field and latency, from the layers' index arithmetic --------------------------------

def _input_interval(conv: nn.Module, first: int, last: int) -> tuple[int, int]:
    """Input positions that outputs ``first..last`` of one convolution read (away from the edges)."""
    k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    if isinstance(conv, nn.ConvTranspose1d):
        pad = 0 if isinstance(conv, CausalConvTranspose1d) else conv.padding[0]
        return -((k - 1 - first - pad) // s), (last + pad) // s  # input j writes j·s .. j·s + k − 1
    pad = conv.left_padding if isinstance(conv, CausalConv1d) else conv.padding[0]
    return first * s - pad, last * s - pad + (k - 1) * d


def dependency_span(module: nn.Module, first: int, last: int) -> tuple[int, int]:
    """First and last input position that outputs ``first..last`` of ``module`` depend on through
    its convolutions, away from the signal's edges. An LSTM inside adds the whole past on top."""
    return _span_through(_convolutions(module), first, last)


def _convolutions(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


def _span_through(convs: list[nn.Module], first: int, last: int) -> tuple[int, int]:
    for conv in reversed(convs):  # registration order is forward order in these models
        first, last = _input_interval(conv, first, last)
    return first, last


def _spans(model: AudioVAE) -> list[tuple[int, int, int]]:
    """(output sample t, first, last input sample it sees) over one hop, far from the edges."""
    hop = model.hop_length
    base = 1000 * hop * max(model.config.strides)
    encoder, decoder = _convolutions(model.encoder), _convolutions(model.decoder)
    spans = []
    for t in range(base, base + hop):
        frames = _span_through(decoder, t, t)
        spans.append((t, *_span_through(encoder, *frames)))
    return spans


def receptive_field(model: AudioVAE) -> int:
    """Input samples one output sample of encode+decode can see through the convolutions (the
    widest over the positions in a hop). With ``lstm_layers`` > 0 the LSTMs add the whole past."""
    return max(last - first + 1 for _, first, last in _spans(model))


def latency_samples(model: AudioVAE) -> int:
    """Algorithmic latency of encode+decode: samples that must arrive, from output sample t's own
    input sample on, before t can be computed (1 + the most any output looks ahead). For causal
    models this is one hop: a latent frame needs its whole hop of audio. For non-causal models it
    is the convolutions' lookahead, which only whole-signal or chunked inference can provide."""
    return max(last - t + 1 for t, _, last in _spans(model))
