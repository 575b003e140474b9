"""Scoring reconstructions with the training validation's metrics (``vae.metric_table.METRICS``).

mel_distance, stft_distance and si_sdr are computed on consecutive segments of the bundle's
``data.chunk_seconds`` (the validation chunk length) and averaged weighted by length; kl_kbps and
active_units come from the posterior's mean-over-frames KL per channel, as ``val/kl_kbps``. As in
validation, the distortions are measured for two decodings, the posterior mean and a seeded
posterior sample (``*_sampled``), after the file is brought to ``evaluation.loudness_lufs``.
Other decodings of the same level-scaled audio (a codec's, see vae/codec/anchors.py) can be scored
beside them in the same pass (``extras``): their distortions and figures under a prefix. Further
metrics (ViSQOL, vae/inference/visqol.py) score every decoding when their ``scorers`` are given."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from vae.inference.audio_io import (AudioError, AudioInfo, AudioSource, audio_info,
                                    find_audio_files, source_name, stream_audio)
from vae.inference.bundle import Bundle
from vae.inference.loading import load_model
from vae.inference.streaming import (DEFAULT_CHUNK_SECONDS, SampleCounter, chunk_frames_for,
                                     decode_stream, encode_stream, rechunk, take)
from vae.loudness import StreamingLoudness, loudness_gain
from vae.metric_table import DISTORTION_NAMES, METRICS, SAMPLED_SUFFIX
from vae.metrics import active_units, distortions
from vae.model import Posterior, kl_to_kbps

MIN_SCORE_SAMPLES = 2048  # the largest STFT window of the metrics
# scored on audio segments, for the mean and the sampled decoding
SEGMENT_METRICS = tuple(name + suffix for suffix in ("", SAMPLED_SUFFIX) for name in DISTORTION_NAMES)
RATE_METRICS = ("kl_kbps", "active_units")  # from the posterior, weighted by latent frames
if set(SEGMENT_METRICS + RATE_METRICS) != set(METRICS):  # a metric added to the table needs a scorer
    raise RuntimeError(f"vae.inference.scoring scores {SEGMENT_METRICS + RATE_METRICS}, the metric "
                       f"table has {tuple(METRICS)}")


def kl_nats_summed_over_frames(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(q || N(0, I)) of each latent channel of ``[latent_dim, frames]``, summed over frames
    (float64, nats): [latent_dim]. The one place a file's per-channel KL is accumulated."""
    return Posterior(mean.double(), std.double()).kl().sum(dim=-1)


def rate_metrics(kl_sum: torch.Tensor, frames: int, frame_rate: float) -> dict[str, float]:
    """kl_kbps and active_units from per-channel KL summed over ``frames`` latent frames."""
    kl = kl_sum / frames
    return {"kl_kbps": kl_to_kbps(float(kl.sum()), frame_rate), "active_units": active_units(kl)}


class SegmentScorer:
    """Scores (prediction, reference) blocks as training validation scores its chunks: the metrics
    of vae.metrics on consecutive segments of ``segment`` samples (batched like validation batches),
    averaged weighted by length. A short tail is merged into the segment before it. si_sdr skips
    silent reference channels (undefined there) and is NaN when every one is silent. ``suffix``
    names the decoding scored ("" for the mean, ``_sampled`` for a posterior sample)."""

    def __init__(self, sample_rate: int, segment: int, batch: int = 16, suffix: str = "") -> None:
        self.sample_rate = sample_rate
        self.segment = max(int(segment), MIN_SCORE_SAMPLES)
        self.batch = batch
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._queue: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.suffix = suffix
        self.totals = {name + suffix: 0.0 for name in DISTORTION_NAMES}
        self.weights = {name + suffix: 0 for name in DISTORTION_NAMES}
        self.segments = 0

    def _add(self, name: str, value: torch.Tensor, weight: int) -> None:
        self.totals[name] += float(value) * weight
        self.weights[name] += weight

    def _score(self, preds: torch.Tensor, refs: torch.Tensor) -> None:
        """A batch [n, channels, L] of equal-length segments: each metric's batch value is the
        mean over its segments, so it counts n · L samples."""
        n, length = refs.shape[0], refs.shape[-1]
        if length < MIN_SCORE_SAMPLES:
            raise ValueError(f"too short to score: {length} samples at {self.sample_rate} Hz "
                             f"(the metrics need at least {MIN_SCORE_SAMPLES})")
        scored = distortions(preds.float(), refs.float(), self.sample_rate, self.suffix)
        for name, (value, weight) in scored.items():  # weight: items, or audible channels
            self._add(name, value, weight * length)
        self.segments += n

    def _flush(self) -> None:
        if self._queue:
            self._score(torch.stack([p for p, _ in self._queue]),
                        torch.stack([r for _, r in self._queue]))
            self._queue = []

    def _enqueue(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        if self._queue and self._queue[0][1].shape != ref.shape:
            self._flush()
        self._queue.append((pred, ref))
        if len(self._queue) >= self.batch:
            self._flush()

    def add_segment(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        """One segment of at most ``segment`` samples (as :func:`rechunk` gives)."""
        if pred.shape != ref.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ")
        if self._pending is not None:
            if ref.shape[-1] < self.segment // 2:  # a short tail: merge it into the pending one
                p, r = self._pending
                self._pending = (torch.cat([p, pred], -1), torch.cat([r, ref], -1))
                return
            self._enqueue(*self._pending)
        self._pending = (pred, ref)

    def add(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        """A whole signal pair (any length), segmented here."""
        for p, r in zip(rechunk([pred], self.segment), rechunk([ref], self.segment)):
            self.add_segment(p, r)

    def result(self) -> dict[str, float]:
        if self._pending is not None:
            self._enqueue(*self._pending)
            self._pending = None
        self._flush()
        return {k: (self.totals[k] / self.weights[k] if self.weights[k] else float("nan"))
                for k in self.totals}


class Scorer(Protocol):
    """What scores a decoding block by block beside its reference, as SegmentScorer does:
    ``result()`` its metrics, ``weights`` each one's weight when files are averaged."""

    weights: dict[str, int]

    def add(self, pred: torch.Tensor, ref: torch.Tensor) -> None: ...

    def result(self) -> dict[str, float]: ...


# A further metric for every decoding: (sample rate, the decoding's suffix) -> its scorer.
ScorerFactory = Callable[[int, str], Scorer]


def metric_segment_samples(bundle: Bundle) -> int:
    """The validation chunk length of the bundle's config, in samples."""
    return round(bundle.config.data.chunk_seconds * bundle.config.model.sample_rate)


def score(bundle: Bundle, reconstruction: torch.Tensor, reference: torch.Tensor,
          mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
    """Every metric of the table for an in-memory reconstruction ``[channels, T]``."""
    scorer = SegmentScorer(bundle.config.model.sample_rate, metric_segment_samples(bundle))
    scorer.add(reconstruction, reference)
    kl_sum = kl_nats_summed_over_frames(mean, std)
    return {**scorer.result(), **rate_metrics(kl_sum, mean.shape[-1], bundle.model.frame_rate)}


def level_gain(bundle: Bundle, source: AudioSource) -> tuple[float, float | None]:
    """The gain bringing the file to ``evaluation.loudness_lufs`` and its measured loudness
    (1 and None when normalisation is off). Loudness is integrated over the whole file in one
    streaming pass."""
    evaluation, cfg = bundle.config.evaluation, bundle.config.model
    if evaluation.loudness_lufs is None:
        return 1.0, None
    meter = StreamingLoudness(cfg.sample_rate)
    for block in stream_audio(source, cfg.sample_rate, cfg.audio_channels):
        meter.add(block)
    if not meter.samples:
        raise AudioError(f"{source_name(source)}: contains no audio samples")
    loudness = meter.integrated()
    return loudness_gain(loudness, evaluation.loudness_lufs, evaluation.loudness_floor_lufs), loudness


def _scaled(blocks: Iterable[torch.Tensor], gain: float) -> Iterable[torch.Tensor]:
    return (block * gain for block in blocks)


def _encode_for_scoring(bundle: Bundle, source: AudioSource, chunk: int, gain: float
                        ) -> tuple[Posterior, torch.Tensor, int]:
    """The posterior ``[latent_dim, frames]``, per-channel KL summed over frames, samples read."""
    cfg = bundle.config.model
    counter = SampleCounter(_scaled(stream_audio(source, cfg.sample_rate, cfg.audio_channels), gain))
    kl_sum = torch.zeros(cfg.latent_dim, dtype=torch.float64)
    means, stds = [], []
    for mean, std in encode_stream(bundle.model, counter, chunk):
        kl_sum += kl_nats_summed_over_frames(mean, std)
        means.append(mean)
        stds.append(std)
    if not means:
        empty = torch.zeros(cfg.latent_dim, 0)
        return Posterior(empty, empty), kl_sum, counter.samples
    return Posterior(torch.cat(means, dim=-1), torch.cat(stds, dim=-1)), kl_sum, counter.samples


@dataclass(frozen=True)
class ScoredFile:
    """A file as evaluate_file scores it, for the decodings scored beside the model's: the
    posterior of its level-scaled audio, and that audio (streamed anew by :meth:`reference`)."""

    bundle: Bundle
    source: AudioSource
    info: AudioInfo
    gain: float
    posterior: Posterior
    kl_sum: torch.Tensor  # per latent channel, summed over frames (nats)
    length: int  # samples at the model's rate
    chunk: int  # latent frames per model call

    def reference(self) -> Iterator[torch.Tensor]:
        """The level-scaled audio at the model's rate and channels: what every decoding is
        scored against."""
        cfg = self.bundle.config.model
        return iter(_scaled(stream_audio(self.source, cfg.sample_rate, cfg.audio_channels), self.gain))


@dataclass
class Decoding:
    """Another decoding of a ScoredFile: its audio (blocks at the model's rate, exactly the
    file's length), scored as ``prefix + metric``, and the ``figures`` it brings (its rate),
    averaged across files weighted by duration."""

    prefix: str
    blocks: Iterable[torch.Tensor]
    figures: dict[str, float] = field(default_factory=dict)


# Opened once per file, closed after scoring (it may hold temporary files).
ExtraDecoding = Callable[[ScoredFile], AbstractContextManager[Decoding]]


def evaluate_file(bundle: Bundle, source: AudioSource, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                  segment_samples: int | None = None,
                  extras: Sequence[ExtraDecoding] = (),
                  scorers: Sequence[ScorerFactory] = ()) -> dict[str, Any]:
    """Metrics of one file in streaming passes (loudness; encode; then both decodings, and the
    ``extras``, beside a re-read of the input), each decoding scored by a SegmentScorer and the
    further ``scorers``: memory does not grow with the file but for its
    posterior, kept for the sampled decoding (mean, scale and sample, latent_dim x frames each:
    20 MB for ten minutes with the default model)."""
    cfg, model = bundle.config.model, bundle.model
    info = audio_info(source, cfg.audio_channels)
    chunk = chunk_frames_for(model, chunk_seconds)
    gain, loudness = level_gain(bundle, source)
    posterior, kl_sum, length = _encode_for_scoring(bundle, source, chunk, gain)
    frames = posterior.mean.shape[-1]
    if not frames:
        raise AudioError(f"{info.name}: contains no audio samples")
    scored = ScoredFile(bundle, source, info, gain, posterior, kl_sum, length, chunk)
    segment = segment_samples or metric_segment_samples(bundle)
    noise = torch.Generator(device=posterior.mean.device).manual_seed(bundle.config.evaluation.noise_seed)
    with ExitStack() as stack:
        decodings = [Decoding("", take(decode_stream(model, latent, chunk), length))
                     for latent in (posterior.mean, posterior.sample(noise))]
        decodings += [stack.enter_context(extra(scored)) for extra in extras]
        by_segment = [SegmentScorer(cfg.sample_rate, segment, suffix=suffix)
                      for suffix in ("", SAMPLED_SUFFIX, *("",) * len(extras))]
        groups: list[list[Scorer]] = [
            [first, *(make(cfg.sample_rate, first.suffix) for make in scorers)] for first in by_segment]
        decoded = [rechunk(d.blocks, by_segment[0].segment) for d in decodings]
        references = rechunk(scored.reference(), by_segment[0].segment)
        try:
            for ref, *preds in zip(references, *decoded, strict=True):
                for group, pred in zip(groups, preds):
                    for scorer in group:  # a segment at a time: SegmentScorer.add keeps it whole
                        scorer.add(pred, ref)
            metrics = {d.prefix + k: v for d, group in zip(decodings, groups)
                       for scorer in group for k, v in scorer.result().items()}
        except ValueError as exc:
            raise AudioError(f"{info.name}: {exc}") from exc
    weights = {d.prefix + k: v for d, group in zip(decodings, groups)
               for scorer in group for k, v in scorer.weights.items()}
    figures = {d.prefix + k: v for d in decodings for k, v in d.figures.items()}
    return {"file": info.name, "duration_s": length / cfg.sample_rate,
            "input_sample_rate": info.sample_rate, "input_channels": info.channels,
            "input_loudness_lufs": loudness, "eval_loudness_lufs": bundle.config.evaluation.loudness_lufs,
            **metrics, **rate_metrics(kl_sum, frames, model.frame_rate), **figures,
            "weights": {**weights, **dict.fromkeys(RATE_METRICS, frames),
                        **dict.fromkeys(figures, length)}}


def mean_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """Across files as validation averages across chunks: weighted by scored samples (frames for
    the latent rate); si_sdr only over non-silent audio. Every weighted key: the table's
    metrics, then the extra decodings'."""
    out = {}
    for name in dict.fromkeys([*METRICS, *(k for r in results for k in r["weights"])]):
        pairs = [(r[name], r["weights"][name]) for r in results
                 if r["weights"].get(name) and not math.isnan(r[name])]
        total = sum(w for _, w in pairs)
        out[name] = sum(v * w for v, w in pairs) / total if total else float("nan")
    return out


def evaluate_files(model: str, inputs: Iterable[str | Path],
                   chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                   segment_seconds: float | None = None, device: str = "cpu",
                   tracking_uri: str | None = None,
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   extras: Sequence[ExtraDecoding] = (),
                   scorers: Sequence[ScorerFactory] = ()) -> dict[str, Any]:
    """Every audio file under ``inputs`` scored by ``model`` (a bundle folder or MLflow URI),
    with the ``extras`` beside it and the further ``scorers``: per file and the mean. Raises
    AudioError / BundleError for bad input, before any file is processed where it can."""
    files = find_audio_files(inputs)
    bundle = load_model(model, device, tracking_uri)
    for file in files:
        audio_info(file, bundle.config.model.audio_channels)
    segment = round(segment_seconds * bundle.config.model.sample_rate) if segment_seconds else None
    results = []
    for file in files:
        results.append(evaluate_file(bundle, file, chunk_seconds, segment, extras, scorers))
        if progress:
            progress(results[-1])
    return {"model": model, "bundle": str(bundle.path), "provenance": bundle.provenance,
            "sample_rate": bundle.config.model.sample_rate, "files": results,
            "mean": mean_metrics(results)}
