"""Level-free evaluation: audio is brought to a reference loudness (ITU-R BS.1770, via pyloudnorm)
before it is encoded and scored.

Every distortion metric depends on level through its absolute clamps (the same pair scored 1.68 at
gain 1 and 0.60 at gain 0.03), so two datasets, or a quiet and a loud file, are comparable only at
one loudness. DAC's test protocol uses -16 LUFS; so does the default here.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pyloudnorm
import torch

# BS.1770's gating block. Shorter clips are measured with one block of their own length: not the
# standard's gating, but a defined loudness for the short chunks tests and tiny models use.
GATE_BLOCK_SECONDS = 0.4


@lru_cache(maxsize=16)
def _meter(sample_rate: int, block_seconds: float) -> pyloudnorm.Meter:
    return pyloudnorm.Meter(sample_rate, block_size=block_seconds)


def integrated_loudness(audio: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS of one clip ``[channels, time]``; ``-inf`` for digital silence."""
    if audio.dim() != 2:
        raise ValueError(f"expected one clip [channels, time], got shape {tuple(audio.shape)}")
    samples = audio.detach().to("cpu", torch.float64).numpy().T
    block = min(GATE_BLOCK_SECONDS, samples.shape[0] / sample_rate)
    if block <= 0:
        raise ValueError("cannot measure the loudness of an empty clip")
    with warnings.catch_warnings():
        # pyloudnorm takes log10(0) on silence and warns; -inf is the right answer here.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_meter(sample_rate, block).integrated_loudness(samples))


def loudness_gain(loudness: float, target_lufs: float, floor_lufs: float) -> float:
    """Linear gain taking ``loudness`` to ``target_lufs``. Clips quieter than ``floor_lufs`` (near
    silence, or -inf) get the floor's gain, so their noise is not blown up to the target level."""
    measured = max(loudness, floor_lufs) if math.isfinite(loudness) else floor_lufs
    return 10.0 ** ((target_lufs - measured) / 20.0)


def normalize_loudness(audio: torch.Tensor, sample_rate: int, target_lufs: float,
                       floor_lufs: float) -> tuple[torch.Tensor, float]:
    """``audio`` ``[..., channels, time]`` with each clip brought to ``target_lufs``; also returns
    the mean measured loudness of the clips before (LUFS, floor where silent)."""
    clips = audio.reshape(-1, *audio.shape[-2:])
    measured = [integrated_loudness(clip, sample_rate) for clip in clips]
    gains = torch.tensor([loudness_gain(m, target_lufs, floor_lufs) for m in measured],
                         dtype=audio.dtype, device=audio.device)
    normalized = clips * gains[:, None, None]
    mean_loudness = float(np.mean([max(m, floor_lufs) for m in measured]))
    return normalized.reshape(audio.shape), mean_loudness
