"""THE metric table: each weight-independent metric's name, which direction is better and its
definition, and the rule that ranks values by it.

Pure data, no torch: search-space validation, the sweep's layout and reports read it without
paying for the tensor code, which lives in ``vae/metrics.py``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# Validation logs every metric under this prefix; evaluate prints the bare names.
VALIDATION_PREFIX = "val/"
# A metric at a run's best report (a sweep trial's run, Tune's results): best/val/kl_kbps.
BEST_PREFIX = "best/"
ACTIVE_UNIT_THRESHOLD_NATS = 0.01

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    """One weight-independent metric: its name, which direction is better, what it measures."""

    name: str
    direction: Direction
    definition: str
    unit: str = ""

    @property
    def key(self) -> str:
        """The name validation logs it under (``val/mel_distance``)."""
        return VALIDATION_PREFIX + self.name


# Distortions are measured twice: decoding the posterior mean (what a latent-diffusion user decodes)
# and a seeded posterior sample (what the KL rate pays for: only a sampled latent can be coded at
# the KL's rate, so a rate-distortion study pairs kl_kbps with the sampled distortion).
SAMPLED_SUFFIX = "_sampled"
_DISTORTIONS = (
    Metric("mel_distance", "min",
           "sum over 7 scales (windows 32..2048, hop/4) of L1 between log10 mel magnitudes "
           "(DAC's definition)"),
    Metric("stft_distance", "min",
           "windows 2048 and 512 (hop/4): L1 of log10 power + L1 of magnitude (DAC's definition)"),
    Metric("si_sdr", "max", "scale-invariant signal-to-distortion ratio over audible channels",
           "dB"),
)
DISTORTION_NAMES = tuple(m.name for m in _DISTORTIONS)


def _sampled(metric: Metric) -> Metric:
    return Metric(metric.name + SAMPLED_SUFFIX, metric.direction,
                  metric.definition + ", decoded from a seeded posterior sample", metric.unit)


# Validation, evaluate, search-space checks, report, export and the app read this table.
METRICS: dict[str, Metric] = {m.name: m for m in (
    *_DISTORTIONS,
    *(_sampled(m) for m in _DISTORTIONS),
    Metric("kl_kbps", "min",
           "latent rate: posterior KL per frame (summed over channels) x frame rate / ln 2 / 1000",
           "kbit/s"),
    Metric("active_units", "max",
           f"latent channels whose mean KL exceeds {ACTIVE_UNIT_THRESHOLD_NATS} nats"),
)}
METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS.values()}


def rank_key(value: float | None, direction: Direction) -> tuple[int, float]:
    """Sort key putting the best value first for ``direction``; missing or non-finite values last."""
    if value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, value if direction == "min" else -value)


def best_metric(key: str) -> str:
    """The name of a metric at a run's best report: ``best/val/kl_kbps``."""
    return BEST_PREFIX + key
