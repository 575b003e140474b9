"""What an audio file is to this project, below both data loading and inference: the extensions
libsndfile reads, channel adaptation, and the resampler (soxr) with its quality setting."""

from __future__ import annotations

import numpy as np
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".caf", ".w64", ".rf64")
RESAMPLE_QUALITY = "HQ"


def adapt_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """[frames, c] → [frames, channels]: mono duplicated to every channel, or averaged to mono."""
    have = audio.shape[1]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    raise ValueError(f"cannot map {have} channels to {channels}")


def resample_frames(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """``[frames, channels]`` from ``in_rate`` to ``out_rate`` with soxr; the same array when equal."""
    if in_rate == out_rate:
        return audio
    return soxr.resample(np.ascontiguousarray(audio), in_rate, out_rate, quality=RESAMPLE_QUALITY)
