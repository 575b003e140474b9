"""Each discriminator's section (``adversarial.<name>``), torch-free so the schema reads fast.

The registry (registry.py) pairs each section with its class; each class file imports its
section from here as its ``config_section``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from vae.config_base import FFTSize, PositiveInt, Section


class MSDConfig(Section):
    """``adversarial.msd``: the multi-scale waveform discriminator (msd.py)."""

    scales: int = Field(3, ge=1, description="waveform scales (each average-pooled by 2)")


class MPDConfig(Section):
    """``adversarial.mpd``: the multi-period discriminator (mpd.py)."""

    periods: list[PositiveInt] = Field(default_factory=lambda: [2, 3, 5, 7, 11], min_length=1)


class MSSTFTConfig(Section):
    """``adversarial.msstft``: the multi-scale STFT discriminator (msstft.py)."""

    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512], min_length=1)


class MultibandConfig(Section):
    """``adversarial.multiband``: the multi-band STFT discriminator (multiband.py)."""

    fft_sizes: list[FFTSize] = Field(default_factory=lambda: [2048, 1024, 512], min_length=1)
    bands: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)],
        min_length=1,
        description="frequency bands as fractions of the Nyquist range",
    )

    @model_validator(mode="after")
    def _bands_sane(self) -> MultibandConfig:
        for lo, hi in self.bands:
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"band ({lo}, {hi}) must satisfy 0 <= low < high <= 1")
        return self
