"""The ``.vaec`` file: a header, then independently decodable blocks of entropy-coded latents.

Layout (little-endian)::

    b"VAEC" | version u16 | header length u32 | header (JSON, UTF-8) | crc32 of the header u32
    then per block: index u32 | start frame u32 | frames u32 | payload length u32 | crc32 u32 |
                    payload = per channel: low i32, high i32 [, mean f32, std f32] | words u32...

A file arrives from anyone: every field is checked before it sizes anything (the header's bounds,
each block's length against what the file still holds, its frames against the header's), each
block's checksum before it is decoded, and every refusal is a CodecError naming the file and,
for a block, its index, byte offset and place in the audio."""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vae.codec.entropy import ENTROPY_MODELS, BlockModel, block_model
from vae.codec.quantiser import Quantiser

MAGIC, VERSION = b"VAEC", 1
PREAMBLE = struct.Struct("<4sHI")  # magic, version, header length
BLOCK_HEAD = struct.Struct("<IIIII")  # index, start frame, frames, payload length, crc32
CRC = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 16
MAX_BLOCK_FRAMES = 1 << 16
MAX_LATENT_DIM = 4096
# About 54 hours at the default model's 86 frames/s: decoding holds the latents in memory
# (at most MAX_FRAMES x latent_dim floats), so a header cannot ask for more.
MAX_FRAMES = 1 << 24
MAX_SYMBOL_RANGE = 1 << 24  # a block's symbols per channel span at most this many values


class CodecError(ValueError):
    """A compressed file that cannot be read or does not fit the model; names the file."""


class Header(BaseModel):
    """What decoding needs besides the blocks, each field bounded (a file may claim anything)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    sample_rate: int = Field(ge=1, le=768_000)
    audio_channels: int = Field(ge=1, le=64)
    latent_dim: int = Field(ge=1, le=MAX_LATENT_DIM)
    hop_length: int = Field(ge=1, le=1 << 20)
    length: int = Field(ge=1, description="samples, at the model's rate")
    frames: int = Field(ge=1, le=MAX_FRAMES)
    block_frames: int = Field(ge=1, le=MAX_BLOCK_FRAMES)
    steps: list[float] = Field(description="each latent channel's quantisation step")
    dither_seed: int | None = Field(None, ge=0, lt=1 << 63)
    entropy_model: Literal[ENTROPY_MODELS]  # type: ignore[valid-type]
    source: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Header:
        if len(self.steps) != self.latent_dim:
            raise ValueError(f"steps has {len(self.steps)} values for {self.latent_dim} channels")
        if not all(math.isfinite(s) and s > 0 for s in self.steps):
            raise ValueError("steps must be positive and finite")
        if self.length > self.frames * self.hop_length:
            raise ValueError(f"length {self.length} exceeds what {self.frames} frames of "
                             f"{self.hop_length} samples hold")
        return self

    @property
    def blocks(self) -> int:
        return math.ceil(self.frames / self.block_frames)

    def quantiser(self) -> Quantiser:
        """The quantiser the file was coded with."""
        return Quantiser(np.asarray(self.steps, dtype=np.float32), self.dither_seed)

    def seconds(self, frame: int) -> float:
        return frame * self.hop_length / self.sample_rate


@dataclass(frozen=True)
class Block:
    index: int
    start: int  # first frame
    model: BlockModel
    words: np.ndarray  # uint32
    offset: int  # byte offset of the block in the file


def write_header(handle: BinaryIO, header: Header) -> int:
    text = json.dumps(header.model_dump(), separators=(",", ":")).encode()
    handle.write(PREAMBLE.pack(MAGIC, VERSION, len(text)) + text + CRC.pack(zlib.crc32(text)))
    return PREAMBLE.size + len(text) + CRC.size


def write_block(handle: BinaryIO, index: int, start: int, frames: int, model: BlockModel,
                words: np.ndarray) -> int:
    params = [model.low.astype("<i4").tobytes(), model.high.astype("<i4").tobytes()]
    if model.kind == "gaussian":
        params += [model.mean.astype("<f4").tobytes(), model.std.astype("<f4").tobytes()]
    payload = b"".join(params) + words.astype("<u4").tobytes()
    handle.write(BLOCK_HEAD.pack(index, start, frames, len(payload), zlib.crc32(payload)) + payload)
    return BLOCK_HEAD.size + len(payload)


def read_header(handle: BinaryIO, name: str) -> Header:
    preamble = handle.read(PREAMBLE.size)
    if len(preamble) < PREAMBLE.size:
        raise CodecError(f"{name}: too short for a .vaec file ({len(preamble)} bytes)")
    magic, version, size = PREAMBLE.unpack(preamble)
    if magic != MAGIC:
        raise CodecError(f"{name}: not a .vaec file (starts with {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CodecError(f"{name}: .vaec version {version}; this reader reads version {VERSION}")
    if size > MAX_HEADER_BYTES:
        raise CodecError(f"{name}: header of {size} bytes; at most {MAX_HEADER_BYTES} expected")
    text, crc = handle.read(size), handle.read(CRC.size)
    if len(text) < size or len(crc) < CRC.size:
        raise CodecError(f"{name}: ends inside its header (truncated)")
    if CRC.unpack(crc)[0] != zlib.crc32(text):
        raise CodecError(f"{name}: header checksum mismatch: the header is damaged")
    try:
        return Header.model_validate(json.loads(text.decode()))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"{name}: header is not JSON ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "header"
        raise CodecError(f"{name}: header {key}: {err['msg']}") from None


def read_blocks(handle: BinaryIO, header: Header, name: str, file_size: int,
                first: int = 0) -> Iterator[Block]:
    """Every block from number ``first`` (the handle at its boundary) in order, each checked
    (index, frames, length, checksum) before it is parsed."""
    start = first * header.block_frames
    for index in range(first, header.blocks):
        offset = handle.tell()
        where = f"{name}: block {index} (byte {offset}, from {header.seconds(start):.2f} s)"
        head = handle.read(BLOCK_HEAD.size)
        if len(head) < BLOCK_HEAD.size:
            raise CodecError(f"{where}: the file ends there (truncated: {header.blocks - index} of "
                             f"{header.blocks} blocks missing)")
        got_index, got_start, frames, size, crc = BLOCK_HEAD.unpack(head)
        expected = min(header.block_frames, header.frames - start)
        if (got_index, got_start, frames) != (index, start, expected):
            raise CodecError(f"{where}: says block {got_index} at frame {got_start} with {frames} "
                             f"frames; expected block {index} at frame {start} with {expected}")
        if size > file_size - offset - BLOCK_HEAD.size:
            raise CodecError(f"{where}: claims {size} bytes, more than the file holds (truncated)")
        payload = handle.read(size)
        if zlib.crc32(payload) != crc:
            raise CodecError(f"{where}: checksum mismatch: the block is damaged")
        yield Block(index, start, parse_payload(payload, header, where), _words(payload, header),
                    offset)
        start += frames
    if handle.read(1):
        raise CodecError(f"{name}: bytes after its last block ({header.blocks} blocks)")


def _params_bytes(header: Header) -> int:
    return header.latent_dim * (16 if header.entropy_model == "gaussian" else 8)


def _words(payload: bytes, header: Header) -> np.ndarray:
    return np.frombuffer(payload[_params_bytes(header):], dtype="<u4").astype(np.uint32)


def parse_payload(payload: bytes, header: Header, where: str) -> BlockModel:
    dim, kind = header.latent_dim, header.entropy_model
    needed = _params_bytes(header)
    if len(payload) < needed or (len(payload) - needed) % 4:
        raise CodecError(f"{where}: payload of {len(payload)} bytes does not fit its layout")
    low, high = (np.frombuffer(payload, "<i4", dim, i * 4 * dim).astype(np.int64) for i in (0, 1))
    if np.any(high <= low) or np.any(high - low > MAX_SYMBOL_RANGE):
        raise CodecError(f"{where}: a channel's symbol range must hold 2 to {MAX_SYMBOL_RANGE} "
                         "values")
    mean = std = None
    if kind == "gaussian":
        mean, std = (np.frombuffer(payload, "<f4", dim, i * 4 * dim) for i in (2, 3))
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise CodecError(f"{where}: its Gaussians' means and stds must be finite, stds > 0")
    return block_model(kind, low, high, np.asarray(header.steps), mean, std)
