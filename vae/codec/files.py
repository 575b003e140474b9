"""Compress an audio file to ``.vaec`` and back: the model's encoder, the posterior-matched
quantiser (quantiser.py), per-block entropy coding (entropy.py) and the container (container.py).

The coded rate is the file's size: ``bytes * 8 / seconds``, header included."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae.codec import entropy
from vae.codec.container import (Block, CodecError, Header, read_blocks, read_header, write_block,
                                 write_header)
from vae.codec.entropy import EntropyModel
from vae.codec.quantiser import Quantiser
from vae.inference.audio_io import AudioSource
from vae.inference.bundle import Bundle, model_summary, weights_fingerprint
from vae.inference.latents import Latents, decode_to_file, encode_file
from vae.inference.streaming import DEFAULT_CHUNK_SECONDS

DEFAULT_BLOCK_SECONDS = 4.0  # a damaged block loses this much audio; each block costs 20 bytes
SCALE_RANGE = (0.01, 100.0)  # --kbps searches the step scale within these
BISECTIONS = 24  # the scale to within 0.04 % of the range's ratio


def compress_latents(latents: Latents, bundle: Bundle, out: str | Path, *, scale: float = 1.0,
                     entropy_model: EntropyModel = "gaussian", dither_seed: int | None = None,
                     block_seconds: float = DEFAULT_BLOCK_SECONDS) -> dict[str, Any]:
    """Write ``latents`` (of ``bundle``) as a .vaec file; what it weighs."""
    mean, std = latents.mean.numpy(), latents.std.numpy()
    quantiser = Quantiser.matched(std, scale, dither_seed)
    summary = model_summary(bundle)
    frame_rate = summary["sample_rate"] / summary["hop_length"]
    header = Header(weights_sha256=weights_fingerprint(bundle) or "0" * 64,
                    sample_rate=summary["sample_rate"], audio_channels=summary["audio_channels"],
                    latent_dim=summary["latent_dim"], hop_length=summary["hop_length"],
                    length=latents.length, frames=int(mean.shape[1]),
                    block_frames=max(1, min(round(block_seconds * frame_rate), 1 << 16)),
                    steps=[float(s) for s in quantiser.steps], dither_seed=dither_seed,
                    entropy_model=entropy_model,
                    source=latents.metadata.get("source", {}))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ideal_bits = 0.0
    with out.open("wb") as handle:
        header_bytes = write_header(handle, header)
        for index in range(header.blocks):
            part = slice(index * header.block_frames, (index + 1) * header.block_frames)
            symbols = quantiser.quantise(mean[:, part], index)
            offsets = quantiser.offsets(index, symbols.shape)
            model = entropy.fit(symbols, quantiser.steps, entropy_model)
            write_block(handle, index, part.start, symbols.shape[1], model,
                        entropy.encode(symbols, model, offsets))
            ideal_bits += entropy.information_bits(symbols, model, offsets)
    seconds = latents.length / summary["sample_rate"]
    size = out.stat().st_size
    return {"file": str(out), "bytes": size, "header_bytes": header_bytes, "seconds": seconds,
            "coded_kbps": coded_kbps(size, seconds), "ideal_kbps": ideal_bits / seconds / 1000,
            "kl_kbps": latents.metadata.get("kl_kbps"), "blocks": header.blocks,
            "entropy_model": entropy_model, "scale": scale, "dither_seed": dither_seed}


def coded_kbps(size_bytes: int, seconds: float) -> float:
    """A coded file's rate: its whole size, headers and container included."""
    return size_bytes * 8 / seconds / 1000


def compress_at_kbps(latents: Latents, bundle: Bundle, out: str | Path, kbps: float,
                     **options: Any) -> dict[str, Any]:
    """The finest quantiser whose file is at most ``kbps`` (coded, header included): the step
    scale bisected on a log scale between SCALE_RANGE's ends (the coded rate falls as it grows).
    A target below the coarsest scale's rate is a CodecError saying that rate."""
    low, high = SCALE_RANGE
    coarsest = compress_latents(latents, bundle, out, scale=high, **options)
    if coarsest["coded_kbps"] > kbps:
        Path(out).unlink()
        raise CodecError(f"{out}: a target of {kbps:g} kbit/s is below what the coarsest "
                         f"quantiser (scale {high:g}) codes, {coarsest['coded_kbps']:.3g} kbit/s")
    best = coarsest
    for _ in range(BISECTIONS):
        scale = math.sqrt(low * high)
        result = compress_latents(latents, bundle, out, scale=scale, **options)
        if result["coded_kbps"] <= kbps:
            best, high = result, scale
        else:
            low = scale
    return compress_latents(latents, bundle, out, scale=best["scale"], **options)  # the file


def compress_file(bundle: Bundle, source: AudioSource, out: str | Path,
                  chunk_seconds: float = DEFAULT_CHUNK_SECONDS, kbps: float | None = None,
                  **options: Any) -> dict[str, Any]:
    """Encode ``source`` with ``bundle`` and write it compressed (see compress_latents), at the
    quantiser ``options`` give or the finest one within ``kbps``."""
    latents = encode_file(bundle, source, chunk_seconds)
    if kbps is not None:
        return compress_at_kbps(latents, bundle, out, kbps, **options)
    return compress_latents(latents, bundle, out, **options)


def read_compressed(path: str | Path, from_block: tuple[int, int] | None = None
                    ) -> tuple[Header, Iterator[tuple[Block, np.ndarray]]]:
    """The header, and each block with its symbols, decoded lazily, in order; ``from_block``
    (index, byte offset of its boundary) starts there: each block decodes alone."""
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"{path}: no such file")
    handle = path.open("rb")
    header = read_header(handle, str(path))
    quantiser = header.quantiser()
    first = 0
    if from_block is not None:
        first = from_block[0]
        handle.seek(from_block[1])

    def blocks() -> Iterator[tuple[Block, np.ndarray]]:
        with handle:
            for block in read_blocks(handle, header, str(path), path.stat().st_size, first):
                frames = min(header.block_frames, header.frames - block.start)
                offsets = quantiser.offsets(block.index, (header.latent_dim, frames))
                yield block, entropy.decode(block.words, block.model, frames, offsets)

    return header, blocks()


def decompress_latents(path: str | Path, bundle: Bundle) -> Latents:
    """The latents a .vaec file holds, checked against ``bundle`` (its weights, its shapes)."""
    header, blocks = read_compressed(path)
    check_model(header, bundle, str(path))
    quantiser = header.quantiser()
    parts = [quantiser.dequantise(symbols, block.index) for block, symbols in blocks]
    latent = torch.from_numpy(np.concatenate(parts, axis=1))
    metadata = {"length": header.length, "hop_length": header.hop_length,
                "source": header.source}
    return Latents(latent, torch.zeros_like(latent), metadata)


def check_model(header: Header, bundle: Bundle, name: str) -> None:
    summary = model_summary(bundle)
    for key in ("sample_rate", "audio_channels", "latent_dim", "hop_length"):
        if getattr(header, key) != summary[key]:
            raise CodecError(f"{name}: coded with {key}={getattr(header, key)}, but the model "
                             f"{bundle.path} has {key}={summary[key]}")
    if header.weights_sha256 != (weights_fingerprint(bundle) or "0" * 64):
        raise CodecError(f"{name}: coded by other weights (sha256 {header.weights_sha256[:12]}…) "
                         f"than {bundle.path}: decoding would give other audio; pass that model")


def decompress_file(path: str | Path, bundle: Bundle, out: str | Path,
                    **decode_options: Any) -> dict[str, Any]:
    """Decode a .vaec file to audio (``decode_to_file``'s options: sample rate, subtype, ...)."""
    latents = decompress_latents(path, bundle)
    written_path, written = decode_to_file(bundle, latents, out, **decode_options)
    return {"file": str(written_path), "samples": written,
            "seconds": latents.length / bundle.config.model.sample_rate}
