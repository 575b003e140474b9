"""``vae-encode --stream``: audio (a file, or a wav/au stream on stdin) through a causal model's
``StreamingEncoder`` block by block, in flat memory.

Audio is read, resampled (the same soxr stream as ``encode_file``) and widened block by block,
and each block is pushed as it arrives; the latent frames it completes go to an anonymous
temporary file, frame after frame, and the ``.npz`` is written from it once the stream ends (its
header needs the frame count). The frames are stored frame-major (numpy's Fortran order of
``[latent_dim, frames]``), so appending one needs no copy; ``Latents.load`` reads either order.
The result equals ``encode_file`` of the same audio up to float rounding."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae.inference.audio_io import AudioError, AudioInfo, AudioSource, source_name, stream_audio
from vae.inference.bundle import Bundle
from vae.inference.latents import ARRAYS, latent_metadata, metadata_array
from vae.inference.scoring import kl_nats_summed_over_frames
from vae.model.streaming import StreamingEncoder, StreamingError

FRAME_DTYPE = np.dtype("<f4")


class FrameSpill:
    """Columns ``[rows, k]`` appended to an anonymous temporary file (gone when closed, or when
    the process dies), then copied into an ``.npy`` member of ``[rows, frames]``."""

    def __init__(self, rows: int) -> None:
        self.rows, self.frames = rows, 0
        self.file = tempfile.TemporaryFile()

    def append(self, columns: torch.Tensor) -> None:
        self.file.write(columns.T.contiguous().numpy().astype(FRAME_DTYPE).tobytes())
        self.frames += columns.shape[-1]

    def copy_into(self, archive: zipfile.ZipFile, name: str) -> None:
        header = {"descr": FRAME_DTYPE.str, "fortran_order": True, "shape": (self.rows, self.frames)}
        self.file.seek(0)
        with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            shutil.copyfileobj(self.file, member)

    def close(self) -> None:
        self.file.close()


def save_spilled(path: Path, mean: FrameSpill, std: FrameSpill, metadata: dict[str, Any]) -> Path:
    """The latent file ``np.savez`` would write for these arrays (uncompressed members)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, spill in zip(ARRAYS, (mean, std)):
            spill.copy_into(archive, name)
        with archive.open(f"{ARRAYS[2]}.npy", "w") as member:
            np.lib.format.write_array(member, metadata_array(metadata))
    return path


def encode_blocks(bundle: Bundle, blocks: Iterable[torch.Tensor], name: str, mean: FrameSpill,
                  std: FrameSpill) -> tuple[int, torch.Tensor]:
    """Pushes ``blocks`` through a StreamingEncoder into the spills; (samples, per-channel KL
    summed over frames). A block the stream cannot take is an AudioError naming ``name``."""
    encoder = StreamingEncoder(bundle.model)
    samples, kl_sum = 0, torch.zeros(bundle.config.model.latent_dim, dtype=torch.float64)

    def keep(frames: tuple[torch.Tensor, torch.Tensor]) -> None:
        nonlocal kl_sum
        mean.append(frames[0])
        std.append(frames[1])
        kl_sum = kl_sum + kl_nats_summed_over_frames(*frames)

    try:
        for block in blocks:
            keep(encoder.push(block))
            samples += block.shape[-1]
        if samples:
            keep(encoder.flush())
    except StreamingError as exc:
        raise AudioError(f"{name}: after {samples} samples, {exc}") from None
    return samples, kl_sum


def encode_file_streaming(bundle: Bundle, source: AudioSource, out: str | Path,
                          block_seconds: float, fingerprint: str | None = None) -> dict[str, Any]:
    """Encodes ``source`` (``-``: stdin) into the latent file ``out`` as the audio arrives, in
    blocks of about ``block_seconds``; the file's metadata. Nothing is written on an error."""
    cfg = bundle.config.model
    name = source_name(source)
    headers: list[AudioInfo] = []
    blocks = stream_audio(source, cfg.sample_rate, cfg.audio_channels,
                          max(1, round(block_seconds * cfg.sample_rate)), headers.append)
    mean, std = FrameSpill(cfg.latent_dim), FrameSpill(cfg.latent_dim)
    try:
        samples, kl_sum = encode_blocks(bundle, blocks, name, mean, std)
        if not samples:
            raise AudioError(f"{name}: contains no audio samples")
        metadata = latent_metadata(bundle, headers[0], samples, kl_sum, mean.frames, fingerprint)
        save_spilled(Path(out), mean, std, metadata)
    finally:
        mean.close()
        std.close()
    return metadata
