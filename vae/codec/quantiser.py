"""Uniform scalar quantisation of the posterior mean, the step matched to the posterior's noise.

The decoder was trained on samples ``mean + std * noise``; a uniform quantiser of step
``sqrt(12) * std`` adds error of exactly that variance. So each latent channel's step is
``scale * sqrt(12) * (the channel's mean posterior std over the file)``: ``scale`` 1 quantises
about as coarsely as the training noise (the rate then tracks the KL's), larger is coarser and
cheaper. With a dither seed the quantisation is subtractively dithered: the decoder adds back the
same uniform offsets (drawn from the seed and the block's index, so any block decodes alone),
which makes the error uniform noise independent of the signal, like the training noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISE_MATCHED = math.sqrt(12.0)  # a uniform variable of width sqrt(12)*s has standard deviation s
MIN_STEP = 1e-6  # a channel the encoder never uses (std ~ 0) still gets a finite step


@dataclass(frozen=True)
class Quantiser:
    steps: np.ndarray  # [latent_dim] float32: each channel's step in latent units
    dither_seed: int | None = None

    @classmethod
    def matched(cls, std: np.ndarray, scale: float, dither_seed: int | None = None) -> Quantiser:
        """Steps from the posterior ``std`` [latent_dim, frames] (see the module docstring)."""
        steps = np.maximum(scale * NOISE_MATCHED * std.mean(axis=1), MIN_STEP)
        return cls(steps.astype(np.float32), dither_seed)

    def offsets(self, block: int, shape: tuple[int, int]) -> np.ndarray:
        """The dither of block ``block`` (zeros without a seed), in symbol units."""
        if self.dither_seed is None:
            return np.zeros(shape, dtype=np.float64)
        rng = np.random.default_rng([self.dither_seed, block])
        return rng.uniform(-0.5, 0.5, size=shape)

    def quantise(self, mean: np.ndarray, block: int) -> np.ndarray:
        """Integer symbols [latent_dim, frames] of block number ``block``."""
        scaled = mean.astype(np.float64) / self.steps[:, None].astype(np.float64)
        return np.rint(scaled + self.offsets(block, mean.shape)).astype(np.int32)

    def dequantise(self, symbols: np.ndarray, block: int) -> np.ndarray:
        """The latents [latent_dim, frames] the decoder is given for block ``block``."""
        offsets = self.offsets(block, symbols.shape)
        return ((symbols - offsets) * self.steps[:, None].astype(np.float64)).astype(np.float32)
