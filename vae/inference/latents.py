"""Latent files: ``.npz`` with the posterior ``mean`` and ``std`` [latent_dim, frames] and
``metadata`` (JSON: sample rate, hop, length, the source's rate/channels/format, the model and its
provenance); written by ``encode_file`` (``vae-encode``), read back by ``decode_to_file``
(``vae-decode``). No pickle."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae.inference.audio_io import AudioError, AudioSource, audio_info, stream_audio, write_audio
from vae.inference.bundle import Bundle, model_summary, weights_fingerprint
from vae.inference.loading import model_spec
from vae.inference.scoring import kl_nats_summed_over_frames, rate_metrics
from vae.inference.streaming import (DEFAULT_CHUNK_SECONDS, SampleCounter, chunk_frames_for,
                                     decode_stream, encode_stream, take)

LATENT_FORMAT = "vae-latents/1"


class LatentFileError(ValueError):
    """A latent file that cannot be read or does not match the model. Names the file."""


@dataclass
class Latents:
    mean: torch.Tensor  # [latent_dim, frames]
    std: torch.Tensor  # [latent_dim, frames]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.metadata.get("length", self.mean.shape[-1] * self.metadata.get("hop_length", 1)))

    def save(self, path: str | Path) -> Path:
        """``.npz`` with ``mean``, ``std`` (float32) and ``metadata`` (a JSON string); no pickle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # a handle, so numpy does not append .npz to the name
            np.savez(handle, mean=self.mean.float().numpy(), std=self.std.float().numpy(),
                     metadata=np.array(json.dumps(self.metadata, default=str)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Latents:
        path = Path(path)
        if not path.is_file():
            raise LatentFileError(f"{path}: no such latent file")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, std = data["mean"], data["std"]
                metadata = json.loads(str(data["metadata"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise LatentFileError(f"{path}: not a latent file written by vae-encode ({exc})") from exc
        if not isinstance(metadata, dict) or metadata.get("format") != LATENT_FORMAT:
            raise LatentFileError(f"{path}: not a {LATENT_FORMAT} latent file")
        _check_metadata(path, metadata)
        for key, array in (("mean", mean), ("std", std)):
            _check_array(path, key, array)
        if mean.shape != std.shape:
            raise LatentFileError(f"{path}: mean {mean.shape} and std {std.shape} differ in shape")
        return cls(torch.from_numpy(mean.astype(np.float32)),
                   torch.from_numpy(std.astype(np.float32)), metadata)

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


def _check_metadata(path: Path, metadata: dict[str, Any]) -> None:
    for key in _METADATA_INTS:
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise LatentFileError(f"{path}: metadata.{key} must be a non-negative whole number, "
                                  f"got {value!r}")
    for key in ("model", "source"):
        if key in metadata and not isinstance(metadata[key], dict):
            raise LatentFileError(f"{path}: metadata.{key} must be a mapping, got {metadata[key]!r}")
    if metadata.get("length") == 0:
        raise LatentFileError(f"{path}: metadata.length is 0: nothing to decode")


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
    rate = rate_metrics(kl_nats_summed_over_frames(mean, std), mean.shape[-1], model.frame_rate)
    metadata = {
        "format": LATENT_FORMAT,
        **model_summary(bundle),
        "length": counter.samples,
        "frames": int(mean.shape[-1]),
        "source": {"name": info.name, "sample_rate": info.sample_rate, "channels": info.channels,
                   "frames": info.frames, "format": info.format, "subtype": info.subtype},
        "model": {"spec": model_spec(bundle),
                  "path": str(bundle.path),
                  "weights_sha256": fingerprint or weights_fingerprint(bundle),
                  "provenance": bundle.provenance},
        "kl_kbps": rate["kl_kbps"],
    }
    return Latents(mean, std, metadata)


def decode_to_file(bundle: Bundle, latents: Latents, path: str | Path, *, sample: bool = False,
                   out_sample_rate: int | None = None, subtype: str | None = None,
                   chunk_seconds: float = DEFAULT_CHUNK_SECONDS, seed: int | None = None
                   ) -> tuple[Path, int]:
    """Decode (posterior mean, or a sample of it) chunk by chunk into an audio file."""
    latent = latents.mean
    if sample:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        latent = latents.mean + latents.std * torch.randn(latents.std.shape, generator=generator)
    model = bundle.model
    blocks = take(decode_stream(model, latent, chunk_frames_for(model, chunk_seconds)),
                  latents.length)
    path, written = write_audio(path, blocks, bundle.config.model.sample_rate, out_sample_rate,
                                subtype)
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
