"""Clips and what the page does with them: load at the model's rate, reconstruct and score,
edit, interpolate or sample latents, and play as WAV."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch

from vae.inference import (MIN_SCORE_SAMPLES, Bundle, decode_latent, read_audio, reconstruct,
                           score)

EXAMPLE = "example"


@dataclass(frozen=True)
class Clip:
    """Where a clip comes from: uploaded bytes, or the synthetic example (``data`` None)."""

    name: str
    data: bytes | None = None
    seed: int = 0

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.data).hexdigest()[:16] if self.data is not None else f"seed{self.seed}"
        return f"{self.name}:{digest}"


def example_clip(sample_rate: int, channels: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """A clip of the synthetic music the models are smoke-trained on: ``[channels, samples]``."""
    from vae.data.synthetic import render_chunk

    audio, _ = render_chunk(seed, "valid", 0, num_samples=max(1, round(seconds * sample_rate)),
                            sample_rate=sample_rate, channels=channels)
    return torch.from_numpy(audio)


def load_clip(clip: Clip, bundle: Bundle, max_seconds: float) -> torch.Tensor:
    """The clip at the model's rate and channels, at most ``max_seconds`` long."""
    cfg = bundle.config.model
    if clip.data is None:
        return example_clip(cfg.sample_rate, cfg.audio_channels, max_seconds, clip.seed)
    handle = io.BytesIO(clip.data)
    handle.name = clip.name
    audio = read_audio(handle, cfg.sample_rate, cfg.audio_channels)
    return audio[:, : max(1, round(max_seconds * cfg.sample_rate))]


def wav_bytes(audio: torch.Tensor, sample_rate: int) -> bytes:
    """16-bit WAV of ``[channels, samples]``, clipped, not normalised (so A/B loudness is real)."""
    buffer = io.BytesIO()
    data = np.clip(audio.detach().float().cpu().numpy().T, -1.0, 1.0)
    sf.write(buffer, data, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class Result:
    audio: torch.Tensor  # input [channels, T]
    reconstruction: torch.Tensor  # [channels, T]
    mean: torch.Tensor  # [latent_dim, frames]
    std: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def run_model(bundle: Bundle, audio: torch.Tensor, with_metrics: bool = True) -> Result:
    """Encode (posterior mean), decode and score, as evaluation does."""
    recon, mean, std = reconstruct(bundle.model, audio)
    result = Result(audio, recon, mean, std)
    if with_metrics:
        result.metrics = score_against(bundle, result, recon)
    return result


def score_against(bundle: Bundle, result: Result, decoded: torch.Tensor) -> dict[str, float]:
    """Every metric of the table for ``decoded`` (any decoding of ``result``'s clip) against the
    clip, with the clip's posterior rate; empty when the clip is too short to score."""
    if result.audio.shape[-1] < MIN_SCORE_SAMPLES:
        return {}
    return score(bundle, decoded, result.audio, result.mean, result.std)


def edit_latent(latent: torch.Tensor, channels: list[int], scale: float = 1.0,
                offset: float = 0.0) -> torch.Tensor:
    """``latent`` with ``channels`` mapped to ``scale · z + offset`` (the others untouched)."""
    out = latent.clone()
    if channels:
        index = torch.tensor(sorted(set(channels)), dtype=torch.long)
        out[index] = out[index] * scale + offset
    return out


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 − α)·a + α·b over the frames both have."""
    frames = min(a.shape[-1], b.shape[-1])
    return (1.0 - alpha) * a[..., :frames] + alpha * b[..., :frames]


def sample_prior(latent_dim: int, frames: int, temperature: float = 1.0,
                 seed: int = 0) -> torch.Tensor:
    """A draw from N(0, temperature² I): ``[latent_dim, frames]``."""
    generator = torch.Generator().manual_seed(int(seed))
    return temperature * torch.randn(latent_dim, frames, generator=generator)


def decode(bundle: Bundle, latent: torch.Tensor, length: int | None = None) -> torch.Tensor:
    return decode_latent(bundle.model, latent, length)
