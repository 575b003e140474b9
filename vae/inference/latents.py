"""Latent files: ``.npz`` with the posterior ``mean`` and ``std`` [latent_dim, frames] and
``metadata`` (JSON: sample rate, hop, length, the source's rate/channels/format, the model and its
provenance); written by ``encode_file`` (``vae-encode``), read back by ``decode_to_file``
(``vae-decode``). No pickle.

A latent file arrives from anyone, so reading one trusts nothing in it: the arrays' headers are
checked before their data is read, the metadata is read by the strict JSON reader and checked
against the arrays (a length the frames cannot hold is refused), and the model it names is only
ever a local bundle folder or a ``models:/``/``runs:/`` URI of the user's own tracking store, never
a URL (:meth:`Latents.recorded_model`)."""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae.inference.audio_io import (MAX_SAMPLE_RATE, AudioError, AudioInfo, AudioSource,
                                    audio_info, stream_audio, write_audio)
from vae.inference.bundle import Bundle, model_summary, weights_fingerprint
from vae.inference.loading import is_model_uri, model_spec
from vae.inference.scoring import kl_nats_summed_over_frames, rate_metrics
from vae.inference.streaming import (DEFAULT_CHUNK_SECONDS, SampleCounter, chunk_frames_for,
                                     decode_stream, encode_stream, take)
from vae.user_files import MAX_BYTES, UserFileError, parse_json

LATENT_FORMAT = "vae-latents/1"
ARRAYS = ("mean", "std", "metadata")
# The model URIs a file may name: resolved by the user's own tracking store, never a host.
TRACKING_STORE_SCHEMES = ("models:/", "runs:/")


class LatentFileError(ValueError):
    """A latent file that cannot be read or does not match the model. Names the file."""


def metadata_array(metadata: dict[str, Any]) -> np.ndarray:
    """How the ``metadata`` array holds the metadata: one JSON string."""
    return np.array(json.dumps(metadata, default=str))


@dataclass
class Latents:
    mean: torch.Tensor  # [latent_dim, frames]
    std: torch.Tensor  # [latent_dim, frames]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Samples to decode: the source's length (checked against the frames when loaded)."""
        return int(self.metadata.get("length", self.mean.shape[-1] * self.metadata.get("hop_length", 1)))

    def save(self, path: str | Path) -> Path:
        """``.npz`` with ``mean``, ``std`` (float32) and ``metadata`` (a JSON string); no pickle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # a handle, so numpy does not append .npz to the name
            np.savez(handle, mean=self.mean.float().numpy(), std=self.std.float().numpy(),
                     metadata=metadata_array(self.metadata))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Latents:
        path = Path(path)
        if not path.is_file():
            raise LatentFileError(f"{path}: no such latent file")
        try:
            _check_headers(path)
            with np.load(path, allow_pickle=False) as data:
                mean, std, text = (data[name] for name in ARRAYS)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise LatentFileError(f"{path}: not a latent file written by vae-encode ({exc})") from None
        except MemoryError:
            raise LatentFileError(f"{path}: its arrays are too large to load") from None
        try:
            metadata = parse_json(str(text), f"{path}: metadata")
        except UserFileError as exc:
            raise LatentFileError(str(exc)) from None
        if not isinstance(metadata, dict) or metadata.get("format") != LATENT_FORMAT:
            raise LatentFileError(f"{path}: not a {LATENT_FORMAT} latent file")
        for key, array in (("mean", mean), ("std", std)):
            _check_array(path, key, array)
        if mean.shape != std.shape:
            raise LatentFileError(f"{path}: mean {mean.shape} and std {std.shape} differ in shape")
        _check_metadata(path, metadata, frames=mean.shape[1])
        return cls(torch.from_numpy(mean.astype(np.float32)),
                   torch.from_numpy(std.astype(np.float32)), metadata)

    def recorded_model(self, name: str, tracking_uri: str | None) -> str:
        """The model this file says encoded it, where it may be loaded without the user naming
        it: an absolute local bundle folder, or a ``models:/``/``runs:/`` URI when the user has a
        tracking store of their own (``tracking_uri``, else $MLFLOW_TRACKING_URI). A URL is
        refused, never fetched: whoever wrote the file chose it."""
        spec = self.metadata.get("model", {}).get("spec")
        if not spec:
            raise LatentFileError(f"{name}: records no model; pass --model")
        if not isinstance(spec, str):
            raise LatentFileError(f"{name}: metadata.model.spec must be a string, got {spec!r}")
        if "://" in spec:
            raise LatentFileError(f"{name}: records the model {spec!r}, a URL, which is not "
                                  "fetched; pass --model with a bundle folder or model URI you trust")
        if spec.startswith(TRACKING_STORE_SCHEMES):
            if not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
                raise LatentFileError(f"{name}: records the model {spec!r}, resolved only through "
                                      "your own tracking store: pass --tracking-uri or --model")
        elif is_model_uri(spec) or not Path(spec).is_absolute():
            raise LatentFileError(f"{name}: records the model {spec!r}, neither an absolute bundle "
                                  "folder nor a models:/ or runs:/ URI; pass --model")
        return spec

    def check_model(self, bundle: Bundle, allow_other_weights: bool = False, name: str = "") -> None:
        """Raises LatentFileError if ``bundle`` cannot decode these latents."""
        where = f"{name}: " if name else ""
        model = model_summary(bundle)
        for key in ("latent_dim", "hop_length", "sample_rate", "audio_channels"):
            if key in self.metadata and self.metadata[key] != model[key]:
                raise LatentFileError(f"{where}encoded with {key}={self.metadata[key]}, but the model "
                                      f"{bundle.path} has {key}={model[key]}")
        if self.mean.shape[0] != model["latent_dim"]:
            raise LatentFileError(f"{where}has {self.mean.shape[0]} latent channels, the model "
                                  f"{model['latent_dim']}")
        expected = self.metadata.get("model", {}).get("weights_sha256")
        if expected and not allow_other_weights and expected != weights_fingerprint(bundle):
            raise LatentFileError(
                f"{where}encoded by another model ({self.metadata['model'].get('spec')}, weights "
                f"sha256 {expected[:12]}…) than {bundle.path}; pass the same model, or allow it "
                "explicitly to decode anyway")


# Metadata keys decoding relies on: what each must be. Anything else is kept as written.
_METADATA_INTS = ("length", "frames", "hop_length", "sample_rate", "audio_channels", "latent_dim")
_POSITIVE = ("hop_length", "sample_rate", "audio_channels", "latent_dim")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_headers(path: Path) -> None:
    """The three arrays are there, of sane kinds and sizes, before numpy reads any data (a
    compressed member can expand to any size)."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for name in ARRAYS:
            if f"{name}.npy" not in names:
                raise KeyError(f"no array {name!r}")
            with archive.open(f"{name}.npy") as member:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(
                                   np.lib.format.read_magic(member))
                if read_header is None:
                    raise ValueError(f"{name}: an .npy version numpy does not write")
                shape, _, dtype = read_header(member)
                data_bytes = archive.getinfo(f"{name}.npy").file_size - member.tell()
            size = math.prod(shape) * dtype.itemsize
            if name == "metadata" and (shape != () or dtype.kind != "U" or size > 4 * MAX_BYTES):
                raise ValueError(f"metadata must be one JSON string of at most "
                                 f"{MAX_BYTES // 1024} KiB, got {dtype} {shape}")
            if size != data_bytes:
                raise ValueError(f"{name}: the header's shape {shape} does not match the data")


def _check_metadata(path: Path, metadata: dict[str, Any], frames: int) -> None:
    """Each key decoding reads is of its type and consistent with the ``frames`` stored."""
    for key in _METADATA_INTS:
        value = metadata.get(key)
        if value is not None and (not _whole(value) or value < 0):
            raise LatentFileError(f"{path}: metadata.{key} must be a non-negative whole number, "
                                  f"got {value!r}")
        if value == 0 and key in _POSITIVE:
            raise LatentFileError(f"{path}: metadata.{key} must be positive, got 0")
    for key in ("model", "source"):
        if key in metadata and not isinstance(metadata[key], dict):
            raise LatentFileError(f"{path}: metadata.{key} must be a mapping, got {metadata[key]!r}")
    if metadata.get("length") == 0:
        raise LatentFileError(f"{path}: metadata.length is 0: nothing to decode")
    rate = metadata.get("source", {}).get("sample_rate")  # decoding writes at this rate
    if rate is not None and (not _whole(rate) or not 0 < rate <= MAX_SAMPLE_RATE):
        raise LatentFileError(f"{path}: metadata.source.sample_rate must be a whole number of Hz "
                              f"from 1 to {MAX_SAMPLE_RATE}, got {rate!r}")
    if metadata.get("frames", frames) != frames:
        raise LatentFileError(f"{path}: metadata.frames is {metadata['frames']}, but the arrays "
                              f"hold {frames} latent frames")
    length, hop = metadata.get("length"), metadata.get("hop_length")
    if length is not None and hop is not None and -(-length // hop) != frames:
        raise LatentFileError(f"{path}: metadata.length is {length} samples, but {frames} frames "
                              f"of hop {hop} hold {(frames - 1) * hop + 1} to {frames * hop}")


def _check_array(path: Path, key: str, array: np.ndarray) -> None:
    """``mean``/``std``: [latent_dim, frames], real floats, finite, at least one frame."""
    if array.dtype.kind != "f":
        raise LatentFileError(f"{path}: {key} has dtype {array.dtype}; expected floating point")
    if array.ndim != 2:
        raise LatentFileError(f"{path}: {key} has shape {array.shape}; expected [latent_dim, frames]")
    if array.shape[1] == 0:
        raise LatentFileError(f"{path}: {key} has no latent frames: nothing to decode")
    if not np.isfinite(array).all():
        raise LatentFileError(f"{path}: {key} contains NaN or infinite values")


def latent_metadata(bundle: Bundle, info: AudioInfo, length: int, kl_sum: torch.Tensor,
                    frames: int, fingerprint: str | None) -> dict[str, Any]:
    """A latent file's metadata: the model, the source (``info``; a pipe's frames: None), the
    ``length`` encoded at the model's rate, and the rate the per-channel ``kl_sum`` makes."""
    rate = rate_metrics(kl_sum, frames, bundle.model.frame_rate)
    return {
        "format": LATENT_FORMAT,
        **model_summary(bundle),
        "length": length,
        "frames": frames,
        "source": {"name": info.name, "sample_rate": info.sample_rate, "channels": info.channels,
                   "frames": info.frames or None, "format": info.format, "subtype": info.subtype},
        "model": {"spec": model_spec(bundle),
                  "path": str(bundle.path),
                  "weights_sha256": fingerprint or weights_fingerprint(bundle),
                  "provenance": bundle.provenance},
        "kl_kbps": rate["kl_kbps"],
    }


def encode_file(bundle: Bundle, source: AudioSource, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                fingerprint: str | None = None) -> Latents:
    """Stream ``source`` through the encoder; the latents and their metadata."""
    cfg = bundle.config.model
    info = audio_info(source, cfg.audio_channels)
    model = bundle.model
    counter = SampleCounter(stream_audio(source, cfg.sample_rate, cfg.audio_channels))
    parts = list(encode_stream(model, counter, chunk_frames_for(model, chunk_seconds)))
    if not parts:
        raise AudioError(f"{info.name}: contains no audio samples")
    mean = torch.cat([m for m, _ in parts], dim=-1)
    std = torch.cat([s for _, s in parts], dim=-1)
    return posterior_latents(bundle, info, counter.samples, mean, std, fingerprint=fingerprint)


def posterior_latents(bundle: Bundle, info: AudioInfo, length: int, mean: torch.Tensor,
                      std: torch.Tensor, kl_sum: torch.Tensor | None = None,
                      fingerprint: str | None = None) -> Latents:
    """A posterior ``[latent_dim, frames]`` of ``length`` samples of ``info`` as Latents with
    the metadata a latent file records (its rate from ``kl_sum``, else from mean and std)."""
    if kl_sum is None:
        kl_sum = kl_nats_summed_over_frames(mean, std)
    return Latents(mean, std, latent_metadata(bundle, info, length, kl_sum, int(mean.shape[-1]),
                                              fingerprint))


def decode_to_file(bundle: Bundle, latents: Latents, path: str | Path, *, sample: bool = False,
                   out_sample_rate: int | None = None, subtype: str | None = None,
                   chunk_seconds: float = DEFAULT_CHUNK_SECONDS, seed: int | None = None,
                   format: str | None = None) -> tuple[Path, int]:
    """Decode (posterior mean, or a sample of it) chunk by chunk into an audio file (``-``:
    stdout, in ``format``): a causal model through its streaming decoder, each chunk as it would
    arrive; any other chunked with context on both sides (``decode_stream``)."""
    latent = latents.mean
    if sample:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        latent = latents.mean + latents.std * torch.randn(latents.std.shape, generator=generator)
    model = bundle.model
    pieces = decode_stream(model, latent, chunk_frames_for(model, chunk_seconds))
    path, written = write_audio(path, take(pieces, latents.length),
                                bundle.config.model.sample_rate, out_sample_rate, subtype, format)
    if written == 0:  # write_audio opens the file on the first block: nothing was written
        raise AudioError(f"{path}: decoding gave 0 samples (length {latents.length}); nothing written")
    return path, written


def find_latent_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named, plus every ``.npz`` under folders named. Raises LatentFileError for a missing
    path or a folder without latent files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.rglob("*.npz"))
            if not found:
                raise LatentFileError(f"{path}: no .npz latent files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise LatentFileError(f"{path}: no such file or folder")
    return files
