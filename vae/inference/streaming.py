"""Chunked encode/decode of signals of any length.

The model is fully convolutional, so long signals are processed in chunks with enough context on
both sides to cover the receptive field, keeping only the central part of each chunk: encoding
keeps the central latent frames of hop-aligned audio chunks, decoding keeps the central samples of
latent chunks. The result equals whole-signal processing up to float rounding (no seams), and
memory is bounded by the chunk size, not the file length."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch

from vae.model import AudioVAE

DEFAULT_CHUNK_SECONDS = 10.0


def _convs(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            yield m


def encoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of audio context each side of a chunk that cover the encoder's receptive
    field. An upper bound: every conv's span is added as if they were all in series."""
    span, jump = 1, 1
    for conv in _convs(model.encoder):
        span += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return math.ceil(span / model.hop_length) + 1


def decoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of context each side of a chunk that cover the decoder's receptive field."""
    span, scale = 0.0, 1.0  # scale: samples per latent frame at the current layer
    for conv in _convs(model.decoder):
        k, s = conv.kernel_size[0], conv.stride[0]
        if isinstance(conv, torch.nn.ConvTranspose1d):
            span += math.ceil(k / s) / scale  # an output sample sees ceil(k / s) inputs
            scale *= s
        else:
            span += (k - 1) * conv.dilation[0] / scale
            scale /= s
    return math.ceil(span) + 1


def chunk_frames_for(model: AudioVAE, chunk_seconds: float) -> int:
    return max(1, math.ceil(chunk_seconds * model.frame_rate))


@torch.inference_mode()
def encode_stream(model: AudioVAE, blocks: Iterable[torch.Tensor], chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Posterior ``(mean, std)`` chunks ``[latent_dim, ≤chunk_frames]`` of audio arriving in blocks
    ``[channels, n]``, in order; together they are ``model.encode`` of the whole signal (frames
    ``ceil(T / hop)``) up to float rounding."""
    hop = model.hop_length
    context = encoder_context_frames(model) if context_frames is None else context_frames
    device = next(model.parameters()).device
    buffer = torch.zeros(0)
    buffer_start = 0  # sample index of buffer[..., 0]; always a multiple of hop
    frame = 0  # next frame to emit

    def run(start: int, stop: int, keep_stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = buffer[:, start - buffer_start: stop - buffer_start]
        posterior = model.encode(x[None].to(device))
        first = frame - start // hop
        keep = slice(first, first + keep_stop - frame)
        return posterior.mean[0, :, keep].cpu(), posterior.std[0, :, keep].cpu()

    for block in blocks:
        buffer = block if buffer.numel() == 0 else torch.cat([buffer, block], dim=-1)
        while buffer_start + buffer.shape[-1] >= (frame + chunk_frames + context) * hop:
            start = max(0, (frame - context) * hop)
            yield run(start, (frame + chunk_frames + context) * hop, frame + chunk_frames)
            frame += chunk_frames
            drop = max(0, (frame - context) * hop) - buffer_start
            buffer, buffer_start = buffer[:, drop:], buffer_start + drop
    if buffer.numel() == 0:
        return
    total = buffer_start + buffer.shape[-1]
    frames = math.ceil(total / hop)
    padded = frames * hop
    buffer = torch.nn.functional.pad(buffer, (0, padded - total))
    while frame < frames:
        start = max(0, (frame - context) * hop)
        stop_frame = min(frames, frame + chunk_frames)
        yield run(start, min(padded, (frame + chunk_frames + context) * hop), stop_frame)
        frame = stop_frame


@torch.inference_mode()
def decode_stream(model: AudioVAE, latent: torch.Tensor, chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[torch.Tensor]:
    """Audio chunks ``[channels, ≤chunk_frames · hop]`` of ``model.decode(latent)`` for a latent
    ``[latent_dim, frames]``, in order, computed chunk by chunk with latent context."""
    hop = model.hop_length
    context = decoder_context_frames(model) if context_frames is None else context_frames
    device = next(model.parameters()).device
    frames = latent.shape[-1]
    for frame in range(0, frames, chunk_frames):
        stop = min(frames, frame + chunk_frames)
        start, end = max(0, frame - context), min(frames, stop + context)
        audio = model.decode(latent[None, :, start:end].to(device))[0]
        yield audio[:, (frame - start) * hop: (stop - start) * hop].float().cpu()


def encode_audio(model: AudioVAE, audio: torch.Tensor, chunk_seconds: float = DEFAULT_CHUNK_SECONDS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[channels, T]`` → posterior mean and std ``[latent_dim, ceil(T / hop)]``, chunked."""
    parts = list(encode_stream(model, [audio], chunk_frames_for(model, chunk_seconds)))
    if not parts:
        raise ValueError("cannot encode an empty signal")
    return torch.cat([m for m, _ in parts], dim=-1), torch.cat([s for _, s in parts], dim=-1)


def decode_latent(model: AudioVAE, latent: torch.Tensor, length: int | None = None,
                  chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> torch.Tensor:
    """``[latent_dim, frames]`` → ``[channels, length or frames · hop]``, chunked."""
    audio = torch.cat(list(decode_stream(model, latent, chunk_frames_for(model, chunk_seconds))), -1)
    return audio if length is None else audio[:, :length]


def reconstruct(model: AudioVAE, audio: torch.Tensor, chunk_seconds: float = DEFAULT_CHUNK_SECONDS
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction ``[channels, T]`` from the posterior mean, mean, std)."""
    mean, std = encode_audio(model, audio, chunk_seconds)
    return decode_latent(model, mean, audio.shape[-1], chunk_seconds), mean, std


def take(blocks: Iterable[torch.Tensor], length: int) -> Iterator[torch.Tensor]:
    """The first ``length`` samples of a block stream."""
    left = length
    for block in blocks:
        if left <= 0:
            return
        block = block[:, :left]
        left -= block.shape[-1]
        yield block


def rechunk(blocks: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Blocks of exactly ``size`` samples (the last one may be shorter)."""
    pending: list[torch.Tensor] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += block.shape[-1]
        if have >= size:
            joined = torch.cat(pending, dim=-1)
            cut = (have // size) * size
            yield from joined[:, :cut].split(size, dim=-1)
            pending, have = [joined[:, cut:]], have - cut
    if have:
        yield torch.cat(pending, dim=-1)


class SampleCounter:
    """Passes blocks ``[channels, n]`` through and counts their samples."""

    def __init__(self, blocks: Iterable[torch.Tensor]) -> None:
        self.blocks, self.samples = blocks, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for block in self.blocks:
            self.samples += block.shape[-1]
            yield block
