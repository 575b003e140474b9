"""Entropy coding of one block's quantised latents with constriction's range coder, under a
quantised-Gaussian model per latent channel. Two models:

- ``prior``: the VAE's prior N(0, 1), in symbol units N(dither offset, 1/step): nothing to store
  but each channel's symbol range;
- ``gaussian``: a Gaussian fitted to each channel's symbols in the block (its mean and standard
  deviation stored in the block, 8 bytes per channel): the aggregate posterior is not the prior.

Each channel's symbols lie in [low, high] (low < high), stored in the block (constriction's leaky
model gives every symbol of that range a nonzero probability, so any block decodes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import constriction
import numpy as np

EntropyModel = Literal["prior", "gaussian"]
ENTROPY_MODELS: tuple[EntropyModel, ...] = ("prior", "gaussian")
MIN_SYMBOL_STD = 0.05  # a channel whose symbols barely vary: keep the model's std positive


@dataclass(frozen=True)
class BlockModel:
    """What decoding a block's symbols needs besides its words: per channel the symbol range and
    the Gaussian's mean and std in symbol units."""

    kind: EntropyModel
    low: np.ndarray  # [latent_dim] int32
    high: np.ndarray  # [latent_dim] int32
    mean: np.ndarray  # [latent_dim] float64
    std: np.ndarray  # [latent_dim] float64

    def per_symbol(self, frames: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each symbol's mean and std, channel-major as the symbols are coded; ``offsets`` (the
        dither) shift the prior's mean, as the symbols are ``latent / step + offset`` (a fitted
        mean already includes them)."""
        shift = offsets if self.kind == "prior" else np.zeros_like(offsets)
        means = (self.mean[:, None] + shift).reshape(-1)
        stds = np.broadcast_to(self.std[:, None], (len(self.std), frames)).reshape(-1)
        return means.astype(np.float64), np.ascontiguousarray(stds, dtype=np.float64)


def block_model(kind: EntropyModel, low: np.ndarray, high: np.ndarray, steps: np.ndarray,
                mean: np.ndarray | None = None, std: np.ndarray | None = None) -> BlockModel:
    """A block's model from its symbol ranges: the prior scaled to the steps, or the Gaussians
    ``mean``/``std`` (as stored: float32), the std kept above MIN_SYMBOL_STD. The encoder (fit)
    and the reader of a file (container.parse_payload) build it here alike."""
    if kind == "prior":
        mean, std = np.zeros(len(steps)), 1.0 / np.asarray(steps, dtype=np.float64)
    else:
        mean = np.asarray(mean, dtype=np.float32).astype(np.float64)
        std = np.asarray(std, dtype=np.float32).astype(np.float64)
    return BlockModel(kind, low.astype(np.int32), high.astype(np.int32), mean,
                      np.maximum(std, MIN_SYMBOL_STD))


def fit(symbols: np.ndarray, steps: np.ndarray, kind: EntropyModel) -> BlockModel:
    """The block's model: the prior scaled to the steps, or Gaussians fitted to the symbols."""
    low = symbols.min(axis=1)
    high = np.maximum(symbols.max(axis=1), low + 1)  # constriction needs 2+ symbols
    return block_model(kind, low, high, steps, symbols.mean(axis=1), symbols.std(axis=1))


def encode(symbols: np.ndarray, model: BlockModel, offsets: np.ndarray) -> np.ndarray:
    """The range coder's words (uint32) for ``symbols`` [latent_dim, frames]."""
    encoder = constriction.stream.queue.RangeEncoder()
    means, stds = model.per_symbol(symbols.shape[1], offsets)
    for channel in range(symbols.shape[0]):
        part = slice(channel * symbols.shape[1], (channel + 1) * symbols.shape[1])
        coder = constriction.stream.model.QuantizedGaussian(int(model.low[channel]),
                                                            int(model.high[channel]))
        encoder.encode(symbols[channel].astype(np.int32), coder, means[part], stds[part])
    return encoder.get_compressed()


def decode(words: np.ndarray, model: BlockModel, frames: int, offsets: np.ndarray) -> np.ndarray:
    """The symbols [latent_dim, frames] ``encode`` coded into ``words``."""
    decoder = constriction.stream.queue.RangeDecoder(words)
    means, stds = model.per_symbol(frames, offsets)
    rows = []
    for channel in range(len(model.low)):
        part = slice(channel * frames, (channel + 1) * frames)
        coder = constriction.stream.model.QuantizedGaussian(int(model.low[channel]),
                                                            int(model.high[channel]))
        rows.append(decoder.decode(coder, means[part], stds[part]))
    return np.stack(rows).astype(np.int32)


def information_bits(symbols: np.ndarray, model: BlockModel, offsets: np.ndarray) -> float:
    """The symbols' information content under the block's Gaussians quantised to unit bins and
    truncated to each channel's [low, high] (without the leak): what an ideal coder would spend,
    to check the range coder against."""
    from scipy.special import ndtr

    means, stds = model.per_symbol(symbols.shape[1], offsets)
    frames = symbols.shape[1]
    low = np.repeat(model.low.astype(np.float64), frames)
    high = np.repeat(model.high.astype(np.float64), frames)
    values = symbols.reshape(-1).astype(np.float64)

    def mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ndtr((b - means) / stds) - ndtr((a - means) / stds)

    probability = mass(values - 0.5, values + 0.5) / mass(low - 0.5, high + 0.5)
    return float(-np.log2(np.maximum(probability, 1e-300)).sum())
