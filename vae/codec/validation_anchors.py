"""Reference codecs on a configuration's validation split, scored as validation scores a model
(vae/training/module.py): the same chunks in the same order, at the same level, by the same metric
definitions, averaged over the split with the same weights. Their points then sit on the axes of
a sweep's rate–distortion plots (``sweep-report --anchors``, ``sweep-study --anchors``).

An anchor's rate is its coded file's (bytes × 8 / seconds, container included), with every chunk
end to end in one file per anchor, so its headers weigh as they would on a long recording (the
joins between chunks cost it a few bits). An anchor decodes one way: its distortion stands for the
mean and the sampled decoding alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vae.codec.anchors import Anchor, AnchorError, anchor_round_trip, find_ffmpeg
from vae.codec.files import coded_kbps
from vae.config import VAEConfig
from vae.metric_table import METRIC_BY_KEY, METRICS, SAMPLED_SUFFIX

RATE = METRICS["kl_kbps"]  # the axis an anchor's coded rate is drawn on
CODEC_NAMES = {"opus": "Opus", "mp3": "MP3"}


@dataclass(frozen=True)
class AnchorScore:
    """One reference codec on the validation split: its coded rate and distortions (by the
    metric table's names: ``mel_distance``, ``si_sdr``, ...)."""

    anchor: Anchor
    coded_kbps: float
    distortions: dict[str, float]

    @property
    def label(self) -> str:
        """``Opus 12 kbit/s``."""
        return f"{CODEC_NAMES.get(self.anchor.codec, self.anchor.codec)} {self.anchor.kbps:g} kbit/s"

    def value(self, key: str) -> float | None:
        """Its figure on the axis of validation metric ``key``: the coded rate on the latent
        rate's, its distortion on a distortion's (mean or sampled); None where it has none."""
        metric = METRIC_BY_KEY.get(key)
        if metric is None:
            return None
        if metric == RATE:
            return self.coded_kbps
        return self.distortions.get(metric.name.removesuffix(SAMPLED_SUFFIX))


def validation_batches(config: VAEConfig) -> list[torch.Tensor]:
    """The validation split's batches ``[B, C, T]`` in validation's order, at its level."""
    from vae.data.datamodule import build_datamodule
    from vae.loudness import at_evaluation_level

    datamodule = build_datamodule(config)
    datamodule.prepare_data()
    return [at_evaluation_level(batch, config.model.sample_rate, config.evaluation)
            for batch in datamodule.val_dataloader()]


def split_mean(batches: Sequence[torch.Tensor], decoded: torch.Tensor,
               sample_rate: int) -> dict[str, float]:
    """Each distortion of ``decoded`` (the batches' chunks end to end, ``[C, N*T]``) over the
    split, as validation's epoch mean weights it: per batch, by its weight."""
    from vae.metrics import distortions

    totals: dict[str, float] = {}
    weights: dict[str, int] = {}
    start = 0
    for batch in batches:
        items, channels, length = batch.shape
        part = decoded[:, start: start + items * length]
        start += items * length
        prediction = part.reshape(channels, items, length).transpose(0, 1)
        for name, (value, weight) in distortions(prediction, batch, sample_rate).items():
            if weight:  # a batch of silent channels has no SI-SDR
                totals[name] = totals.get(name, 0.0) + float(value) * weight
                weights[name] = weights.get(name, 0) + weight
    return {name: totals[name] / weights[name] for name in totals}


def score_on_validation(config: VAEConfig, anchors: Sequence[Anchor]) -> list[AnchorScore]:
    """Each of ``anchors`` coded, decoded and scored on ``config``'s validation split; an
    AnchorError when ffmpeg lacks an encoder or the split is empty."""
    ffmpeg = find_ffmpeg(anchors)
    batches = validation_batches(config)
    if not batches:
        raise AnchorError("--anchors: the validation split is empty (data.val_chunks)")
    sample_rate = config.model.sample_rate
    joined = torch.cat([chunk for batch in batches for chunk in batch], dim=-1)
    seconds = joined.shape[-1] / sample_rate
    scores = []
    for anchor in anchors:
        decoded, size = anchor_round_trip(joined, sample_rate, anchor, ffmpeg)
        scores.append(AnchorScore(anchor, coded_kbps(size, seconds),
                                  split_mean(batches, decoded, sample_rate)))
    return scores
