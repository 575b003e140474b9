"""Level-free evaluation: audio is brought to a reference loudness (ITU-R BS.1770, via pyloudnorm)
before it is encoded and scored. Clips in memory are measured by pyloudnorm itself; files of any
length by :class:`StreamingLoudness`, which gives pyloudnorm's figure in one pass of flat memory.

Every distortion metric depends on level through its absolute clamps (the same pair scored 1.68 at
gain 1 and 0.60 at gain 0.03), so two datasets, or a quiet and a loud file, are comparable only at
one loudness. DAC's test protocol uses -16 LUFS; so does the default here.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyloudnorm
import torch
from scipy.signal import lfilter

if TYPE_CHECKING:
    from vae.config import EvaluationConfig

# BS.1770's gating block. Shorter clips are measured with one block of their own length: not the
# standard's gating, but a defined loudness for the short chunks tests and tiny models use.
GATE_BLOCK_SECONDS = 0.4
# BS.1770-4's gating figures, as pyloudnorm's Meter.integrated_loudness hard-codes them (it exposes
# none of them): the channel weights (L, R, C, Ls, Rs), the K-weighting offset, the gates.
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
LOUDNESS_OFFSET = -0.691
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


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


class StreamingLoudness:
    """Integrated loudness (LUFS) of a signal arriving in blocks ``[channels, n]``: what
    :func:`integrated_loudness` gives for the whole signal (to float rounding), in memory that
    does not grow with it (one float per channel per 100 ms step, besides the block at hand).

    Written here because no library measures pyloudnorm's figure in a stream: pyloudnorm takes
    the whole signal and copies it as float64 (ten minutes of stereo peaked 1.2 GB over the
    process), and the streaming meters (libebur128 and its bindings) derive the K-weighting from
    the standard's analog prototype, pyloudnorm's 'DeMan' filters, which read 0.03-0.05 LU from
    pyloudnorm's default on sines and noise, moving every evaluation's gain. So this runs
    pyloudnorm's filters (scipy's lfilter, its state carried from block to block) and its block
    arithmetic: a 400 ms block every 100 ms from per-step sums of squares, then the two gates."""

    def __init__(self, sample_rate: int) -> None:
        meter = _meter(sample_rate, GATE_BLOCK_SECONDS)
        self.sample_rate = sample_rate
        self.samples = 0
        self._block_seconds = meter.block_size
        self._step = 1.0 - meter.overlap  # a fraction of a block
        self._steps_per_block = round(1.0 / self._step)
        # pyloudnorm keeps the K-weighting stages in a private dict, in the order it applies them
        self._stages = [(stage.b, stage.a, stage.passband_gain) for stage in meter._filters.values()]
        self._states: list[np.ndarray] | None = None
        self._step_sums: list[np.ndarray] = []  # per channel, of each finished step
        self._current: np.ndarray | None = None  # of the step being filled
        self._head: list[torch.Tensor] = []  # the raw signal while shorter than one block

    def _edge(self, step: int) -> int:
        """First sample of ``step``, rounded as pyloudnorm bounds its blocks."""
        return int(self._block_seconds * (step * self._step) * self.sample_rate)

    def add(self, block: torch.Tensor) -> None:
        """The next ``[channels, n]`` samples."""
        if block.dim() != 2 or block.shape[0] > len(CHANNEL_WEIGHTS):
            raise ValueError(f"expected blocks [channels <= {len(CHANNEL_WEIGHTS)}, time], got "
                             f"shape {tuple(block.shape)}")
        if self._states is None:
            channels = block.shape[0]
            self._states = [np.zeros((channels, max(len(a), len(b)) - 1)) for b, a, _ in self._stages]
            self._current = np.zeros(channels)
        if self.samples < self._block_seconds * self.sample_rate:
            self._head.append(block)
        else:
            self._head = []
        weighted = block.detach().to("cpu", torch.float64).numpy()
        for i, (b, a, gain) in enumerate(self._stages):
            weighted, self._states[i] = lfilter(b, a, weighted, axis=-1, zi=self._states[i])
            weighted = gain * weighted
        self._accumulate(np.square(weighted))

    def _accumulate(self, squares: np.ndarray) -> None:
        start = self.samples
        end, position = start + squares.shape[-1], start
        while position < end:
            edge = self._edge(len(self._step_sums) + 1)  # where the step being filled ends
            stop = min(edge, end)
            self._current += squares[:, position - start:stop - start].sum(axis=-1)
            position = stop
            if stop == edge:
                self._step_sums.append(self._current)
                self._current = np.zeros_like(self._current)
        self.samples = end

    def integrated(self) -> float:
        """The integrated loudness of everything added; ``-inf`` for digital silence."""
        if self.samples == 0:
            raise ValueError("cannot measure the loudness of an empty clip")
        if self.samples < self._block_seconds * self.sample_rate:  # pyloudnorm's shortest
            return integrated_loudness(torch.cat(self._head, dim=-1), self.sample_rate)
        duration = self.samples / self.sample_rate
        blocks = int(np.round((duration - self._block_seconds) / (self._block_seconds * self._step))) + 1
        steps = np.stack([*self._step_sums, self._current], axis=-1)
        missing = blocks + self._steps_per_block - 1 - steps.shape[-1]  # steps past the end: 0
        steps = np.pad(steps, ((0, 0), (0, max(0, missing))))
        windows = np.lib.stride_tricks.sliding_window_view(steps, self._steps_per_block, axis=-1)
        mean_squares = windows.sum(axis=-1)[:, :blocks] / (self._block_seconds * self.sample_rate)
        return _gated_loudness(mean_squares)


def _weighted_loudness(mean_squares: np.ndarray) -> np.ndarray:
    """LUFS of per-channel mean squares ``[channels, ...]``."""
    weights = np.asarray(CHANNEL_WEIGHTS[:mean_squares.shape[0]])
    return LOUDNESS_OFFSET + 10.0 * np.log10(np.tensordot(weights, mean_squares, axes=1))


def _gated_loudness(mean_squares: np.ndarray) -> float:
    """BS.1770-4's gating of blocks' mean squares ``[channels, blocks]``, as pyloudnorm does it."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no block, log10(0): as below
        block_loudness = _weighted_loudness(mean_squares)
        audible = block_loudness >= ABSOLUTE_GATE_LUFS
        relative_gate = _weighted_loudness(mean_squares[:, audible].mean(axis=-1)) + RELATIVE_GATE_LU
        gated = (block_loudness > relative_gate) & (block_loudness > ABSOLUTE_GATE_LUFS)
        # no block left: mean square 0, loudness -inf (pyloudnorm's answer)
        return float(_weighted_loudness(np.nan_to_num(mean_squares[:, gated].mean(axis=-1))))


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


def at_evaluation_level(audio: torch.Tensor, sample_rate: int,
                        evaluation: EvaluationConfig) -> torch.Tensor:
    """A batch ``[..., channels, time]`` at the level every figure is measured at
    (``evaluation.loudness_lufs``, each clip alone; as it is when that is null)."""
    if evaluation.loudness_lufs is None:
        return audio
    return normalize_loudness(audio, sample_rate, evaluation.loudness_lufs,
                              evaluation.loudness_floor_lufs)[0]
