"""Waveform and spectrogram figures of clips side by side, on shared scales."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch

SPECTROGRAM_FFT = 1024
DYNAMIC_RANGE_DB = 80


def envelope(signal: torch.Tensor, sample_rate: int, points: int = 1500
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, min, max) over ``points`` buckets: a waveform drawn at screen resolution."""
    x = signal.detach().float().cpu().numpy()
    bucket = max(1, math.ceil(len(x) / points))
    padded = np.pad(x, (0, (-len(x)) % bucket), mode="edge").reshape(-1, bucket)
    time = (np.arange(padded.shape[0]) * bucket + bucket / 2) / sample_rate
    return time, padded.min(axis=1), padded.max(axis=1)


def spectrogram_db(audio: torch.Tensor) -> np.ndarray:
    """Magnitude spectrogram in dB of the mono mix (a shorter FFT for very short clips)."""
    from vae.dsp import magnitude, stft

    mono = audio.float().mean(dim=0)
    n_fft = SPECTROGRAM_FFT if mono.shape[-1] > SPECTROGRAM_FFT \
        else 2 ** int(math.log2(max(mono.shape[-1], 4)) - 1)
    return (20 * torch.log10(magnitude(stft(mono, n_fft)) + 1e-6)).numpy()


def _draw_waveform(ax: Any, audio: torch.Tensor, sample_rate: int, peak: float, label: str) -> None:
    for channel in range(audio.shape[0]):
        time, low, high = envelope(audio[channel], sample_rate)
        ax.fill_between(time, low, high, linewidth=0.3, alpha=0.6,
                        label=("L", "R")[channel] if audio.shape[0] == 2 else None)
    ax.set_xlim(0, audio.shape[-1] / sample_rate)
    ax.set_ylim(-1.05 * peak, 1.05 * peak)
    ax.set_title(label)
    ax.set_xlabel("time (s)")


def comparison_figure(clips: dict[str, torch.Tensor], sample_rate: int) -> Any:
    """Waveform (top) and spectrogram in dB (bottom) of each clip, side by side, shared scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clips)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n, 5.4), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [1, 1.6]})
    specs = {label: spectrogram_db(audio) for label, audio in clips.items()}
    top = max((s.max() for s in specs.values()), default=0.0)
    peak = max((float(a.abs().max()) for a in clips.values()), default=1.0) or 1.0
    for column, (label, audio) in enumerate(clips.items()):
        seconds = audio.shape[-1] / sample_rate
        _draw_waveform(axes[0, column], audio, sample_rate, peak, label)
        spec_ax = axes[1, column]
        image = spec_ax.imshow(specs[label], origin="lower", aspect="auto", cmap="magma",
                               vmin=top - DYNAMIC_RANGE_DB, vmax=top,
                               extent=(0, seconds, 0, sample_rate / 2000))
        spec_ax.set_xlabel("time (s)")
        spec_ax.set_ylabel("kHz")
    fig.colorbar(image, ax=axes[1, :].tolist(), label="dB", aspect=30, pad=0.01)
    return fig


def comparison_png(clips: dict[str, torch.Tensor], sample_rate: int, dpi: int = 90) -> bytes:
    """:func:`comparison_figure` as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    figure = comparison_figure(clips, sample_rate)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()
