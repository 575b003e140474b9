"""Chunked encode/decode of signals of any length.

The convolutions have a finite receptive field, so long signals are processed in chunks with
enough context on both sides to cover it, keeping only the central part of each chunk: encoding
keeps the central latent frames of hop-aligned audio chunks, decoding keeps the central samples of
latent chunks. The result equals whole-signal processing up to float rounding (no seams), and
memory is bounded by the chunk size, not the file length.

An LSTM (``model.lstm_layers``) remembers the whole past, so a model with one is split around it:
the convolutions before it run in chunks with context, the LSTM runs over their output in order,
carrying its state, and the convolutions after it run in chunks with context over the LSTM's
output (their lookahead is taken from it as it comes). Causal models are streamed exactly by
``vae.model.streaming``, which needs no context at all."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch

from vae.model import AudioVAE
from vae.model.layers import LSTMBlock
from vae.model.streaming import StreamingDecoder, StreamingEncoder, dependency_span

DEFAULT_CHUNK_SECONDS = 10.0
Net = Callable[[torch.Tensor], torch.Tensor]


def encoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of audio context each side of a chunk that cover the encoder's convolutions
    (from their index arithmetic, ``vae.model.streaming.dependency_span``)."""
    return _units_of_context(model.encoder, model.hop_length, 1)


def decoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of context each side of a chunk that cover the decoder's convolutions."""
    return _units_of_context(model.decoder, 1, model.hop_length)


def chunk_frames_for(model: AudioVAE, chunk_seconds: float) -> int:
    return max(1, math.ceil(chunk_seconds * model.frame_rate))


def _units_of_context(stack: torch.nn.Module, step_in: int, step_out: int) -> int:
    """Units of input context each side that one unit of ``stack``'s output needs (a unit: step_in
    input positions, step_out output positions)."""
    unit = 1000 * step_in * step_out
    first, last = dependency_span(stack, unit * step_out, (unit + 1) * step_out - 1)
    return max(0, math.ceil((unit * step_in - first) / step_in),
               math.ceil((last + 1 - (unit + 1) * step_in) / step_in))


def _split_at_lstm(net: torch.nn.Sequential) -> tuple[torch.nn.Sequential, LSTMBlock | None,
                                                      torch.nn.Sequential]:
    for i, layer in enumerate(net):
        if isinstance(layer, LSTMBlock):
            return net[:i], layer, net[i + 1:]
    return net, None, net[len(net):]


def _in_chunks(net: Net, blocks: Iterable[torch.Tensor], step_in: int, step_out: int,
               chunk: int, context: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``net`` (step_in input positions → step_out outputs, finite receptive field) of the signal
    arriving in ``blocks`` ``[channels, n]``, in chunks of ``chunk`` units with ``context`` units
    each side; the end is zero-padded to a whole unit, as ``AudioVAE.encode`` pads to a hop."""
    buffer = torch.zeros(0)
    buffer_start = 0  # input index of buffer[..., 0]; always a multiple of step_in
    unit = 0  # next unit to emit

    def run(start: int, stop: int, keep_stop: int) -> torch.Tensor:
        x = buffer[:, start * step_in - buffer_start: stop * step_in - buffer_start]
        return net(x[None].to(device))[0, :, (unit - start) * step_out: (keep_stop - start) * step_out]

    for block in blocks:
        buffer = block if buffer.numel() == 0 else torch.cat([buffer, block], dim=-1)
        while buffer_start + buffer.shape[-1] >= (unit + chunk + context) * step_in:
            yield run(max(0, unit - context), unit + chunk + context, unit + chunk)
            unit += chunk
            drop = max(0, unit - context) * step_in - buffer_start
            buffer, buffer_start = buffer[:, drop:], buffer_start + drop
    if buffer.numel() == 0:
        return
    units = math.ceil((buffer_start + buffer.shape[-1]) / step_in)
    buffer = torch.nn.functional.pad(buffer, (0, units * step_in - buffer_start - buffer.shape[-1]))
    while unit < units:
        stop = min(units, unit + chunk)
        yield run(max(0, unit - context), min(units, unit + chunk + context), stop)
        unit = stop


def _lstm_in_order(lstm: LSTMBlock, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    state = None
    for x in chunks:
        y, state = lstm.step(x[None], state)
        yield y[0]


def _around_lstm(net: torch.nn.Sequential, blocks: Iterable[torch.Tensor], step_in: int,
                 step_out: int, chunk: int, context: int | None, device: torch.device,
                 tail: Net = lambda y: y) -> Iterator[torch.Tensor]:
    """``tail(net(·))`` of a signal in chunks, exactly, with ``net``'s LSTM run in order between
    its convolutions before (step_in → 1) and after it (1 → step_out)."""
    before, lstm, after = _split_at_lstm(net)
    pre_context = _units_of_context(before, step_in, 1) if context is None else context
    post_context = _units_of_context(after, 1, step_out) if context is None else context
    features = _lstm_in_order(lstm, _in_chunks(before, blocks, step_in, 1, chunk, pre_context,
                                               device))
    yield from _in_chunks(lambda x: tail(after(x)), features, 1, step_out, chunk, post_context,
                          device)


def _stacked(posterior) -> torch.Tensor:
    return torch.cat([posterior.mean, posterior.std], dim=1)


def _split_posterior(model: AudioVAE, stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = stacked.float().cpu().split(model.config.latent_dim)
    return mean, std


def _causal_encode(model: AudioVAE, blocks: Iterable[torch.Tensor], chunk_frames: int
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    encoder = StreamingEncoder(model)
    for block in blocks:
        for piece in block.split(chunk_frames * model.hop_length, dim=-1):
            mean, std = encoder.push(piece)
            if mean.shape[-1]:
                yield mean, std
    mean, std = encoder.flush()
    if mean.shape[-1]:
        yield mean, std


@torch.inference_mode()
def encode_stream(model: AudioVAE, blocks: Iterable[torch.Tensor], chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Posterior ``(mean, std)`` chunks ``[latent_dim, ≤chunk_frames]`` of audio arriving in blocks
    ``[channels, n]``, in order; together they are ``model.encode`` of the whole signal (frames
    ``ceil(T / hop)``) up to float rounding."""
    if model.config.causal and context_frames is None:
        yield from _causal_encode(model, blocks, chunk_frames)
        return
    device, hop = next(model.parameters()).device, model.hop_length
    if model.config.lstm_layers:
        stacked = _around_lstm(model.encoder.net, blocks, hop, 1, chunk_frames, context_frames,
                               device, lambda y: _stacked(model.bottleneck(y)))
    else:
        context = encoder_context_frames(model) if context_frames is None else context_frames
        stacked = _in_chunks(lambda x: _stacked(model.encode(x)), blocks, hop, 1, chunk_frames,
                             context, device)
    for part in stacked:
        yield _split_posterior(model, part)


@torch.inference_mode()
def decode_stream(model: AudioVAE, latent: torch.Tensor, chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[torch.Tensor]:
    """Audio chunks ``[channels, ≤chunk_frames · hop]`` of ``model.decode(latent)`` for a latent
    ``[latent_dim, frames]``, in order, computed chunk by chunk with latent context."""
    hop = model.hop_length
    device = next(model.parameters()).device
    pieces = latent.split(chunk_frames, dim=-1)
    if model.config.causal and context_frames is None:
        decoder = StreamingDecoder(model)
        yield from (decoder.push(piece.float().contiguous()) for piece in pieces)
        return
    if model.config.lstm_layers:
        yield from (audio.float().cpu() for audio in _around_lstm(
            model.decoder.net, pieces, 1, hop, chunk_frames, context_frames, device))
        return
    context = decoder_context_frames(model) if context_frames is None else context_frames
    yield from (audio.float().cpu() for audio in _in_chunks(
        model.decode, pieces, 1, hop, chunk_frames, context, device))


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
