"""ViSQOL v3 in audio mode: the MOS-LQO of a decoding against its reference (``visqol_moslqo``,
about 1 for bad to 4.73 for a clip against itself; higher is better), the perceptual metric
EnCodec and DAC report beside Opus and MP3. ``vae-evaluate --visqol`` scores every decoding with it.

visqol-python (the ``visqol`` extra, imported only here and only when scoring: a pure-Python port
of Google's ViSQOL with its SVR model) compares mono 48 kHz clips of a few seconds, as the
reference implementation is meant for. So a decoding is scored in windows of WINDOW_SECONDS: each
(prediction, reference) window is mixed to mono, resampled to 48 kHz by the project's soxr
resampler and scored; the file's figure is the mean over windows weighted by their length. A last
window shorter than MIN_WINDOW_SECONDS (ViSQOL needs 45 spectrogram frames, 0.96 s) is folded
into the one before, and a whole file that short is not scored (NaN). Like SI-SDR, ViSQOL means
nothing on a silent reference (it levels the prediction to the reference), so silent windows are
skipped; a silent prediction against an audible reference is NaN to ViSQOL, and so is the file.
Cost: about 0.7 s of one CPU core per second of audio and decoding."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from vae.inference.audio_io import resample
from vae.metrics import SILENT_POWER

if TYPE_CHECKING:
    from visqol import VisqolApi

VISQOL_METRIC = "visqol_moslqo"
VISQOL_SAMPLE_RATE = 48000  # audio mode's rate: its SVR model was fitted there
WINDOW_SECONDS = 10.0  # the clip length ViSQOL is made for
MIN_WINDOW_SECONDS = 1.0  # ViSQOL refuses less than 45 frames of its spectrogram (0.96 s)


@functools.cache
def visqol_api() -> VisqolApi:
    """ViSQOL in audio mode with its bundled SVR model (made once); ImportError without the
    visqol extra."""
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="audio")
    return api


def _mono_48k(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    mono = audio.detach().cpu().double().mean(dim=0, keepdim=True)
    return resample(mono, sample_rate, VISQOL_SAMPLE_RATE)[0].numpy()


def visqol_moslqo(prediction: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> float:
    """ViSQOL's MOS-LQO of ``prediction`` against ``reference`` (``[channels, samples]`` at
    ``sample_rate``, at least MIN_WINDOW_SECONDS) as one clip."""
    pred, ref = _mono_48k(prediction, sample_rate), _mono_48k(reference, sample_rate)
    with np.errstate(invalid="ignore", divide="ignore"):  # a silent prediction: NaN, no warning
        return float(visqol_api().measure_from_arrays(ref, pred, VISQOL_SAMPLE_RATE).moslqo)


class VisqolScorer:
    """Scores (prediction, reference) blocks of any length with ViSQOL in windows of
    ``window_seconds``, as the module docstring says: ``visqol_moslqo`` + ``suffix``, weighted by
    the samples scored. A ScorerFactory of vae.inference.scoring (``VisqolScorer(rate, suffix)``)."""

    def __init__(self, sample_rate: int, suffix: str = "",
                 window_seconds: float = WINDOW_SECONDS) -> None:
        self.sample_rate = sample_rate
        self.window = round(window_seconds * sample_rate)
        self.min_window = round(MIN_WINDOW_SECONDS * sample_rate)
        self.name = VISQOL_METRIC + suffix
        self.total = 0.0
        self.weights = {self.name: 0}
        self.windows = 0  # scored
        self._blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._buffered = 0

    def add(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        if pred.shape != ref.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ")
        self._blocks.append((pred, ref))
        self._buffered += ref.shape[-1]
        # a window goes once a minimum one follows it: the last window is never too short
        while self._buffered >= self.window + self.min_window:
            self._score(*self._take(self.window))

    def _take(self, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        pred = torch.cat([p for p, _ in self._blocks], dim=-1)
        ref = torch.cat([r for _, r in self._blocks], dim=-1)
        self._blocks = [(pred[:, samples:], ref[:, samples:])]
        self._buffered -= samples
        return pred[:, :samples], ref[:, :samples]

    def _score(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        samples = ref.shape[-1]
        silent = bool((ref.double().pow(2).mean(dim=-1) <= SILENT_POWER).all())
        if silent or samples < self.min_window:  # undefined: not scored
            return
        self.total += visqol_moslqo(pred, ref, self.sample_rate) * samples
        self.weights[self.name] += samples
        self.windows += 1

    def result(self) -> dict[str, float]:
        if self._buffered:
            self._score(*self._take(self._buffered))
        weight = self.weights[self.name]
        return {self.name: self.total / weight if weight else math.nan}
