"""Reference codecs beside a sweep's trials: ``sweep-report SWEEP --anchors opus:6,opus:12,mp3:32``
and ``sweep-study ... --anchors`` score ffmpeg's libopus / libmp3lame on the validation split the
trials are scored on, as validation scores them (vae/codec/validation_anchors.py), draw each as a
labelled diamond on the rate–distortion plots (its coded rate on the latent rate's axis) and list
them in a table: the question every codec is asked, whether it beats Opus at a matched rate.

The split is the sweep's base configuration's (``data``, ``model.sample_rate``, ``evaluation``):
a space that searches one of those scores its trials on other chunks than the anchors."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import pandas as pd

from sweeps.layout import LayoutError, SweepPaths
from vae.metric_table import DISTORTION_NAMES, METRICS

if TYPE_CHECKING:
    from vae.codec.anchors import Anchor
    from vae.codec.validation_anchors import AnchorScore
    from vae.config import VAEConfig

ANCHORS_CSV = "anchors.csv"
BASE_CONFIG_ARTIFACT = "base_config.yaml"  # what the driver logs to the sweep's parent run
LABEL = "label"
CODED_KBPS = "coded kbit/s"
STYLE = {"marker": "D", "color": "C4"}  # a reference codec, in every figure


def sweep_config(paths: SweepPaths, state: dict[str, Any]) -> VAEConfig:
    """The sweep's base configuration: from its state, else (a sweep started before the state
    kept it) the copy its parent MLflow run holds; a LayoutError when neither is there."""
    from vae.config import VAEConfig, load_config

    if state.get("base_config"):
        return VAEConfig.model_validate(state["base_config"])
    from sweeps.execution.tracking import client_for

    if not (state.get("tracking_uri") and state.get("parent_run_id")):
        raise LayoutError(f"{paths.state_file}: no base configuration and no parent run to read "
                          "it from (expected a sweep started with sweep-run)")
    with TemporaryDirectory(prefix="sweep-config-") as folder:
        try:
            path = client_for(state["tracking_uri"]).download_artifacts(
                state["parent_run_id"], BASE_CONFIG_ARTIFACT, folder)
        except Exception as exc:  # MLflow raises several types for a missing run or artifact
            raise LayoutError(f"{paths.state_file}: the sweep's base configuration is not in "
                              f"its state, and its parent run {state['parent_run_id']} at "
                              f"{state['tracking_uri']} gave none ({exc})") from None
        return load_config(path)


def add_anchors_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anchors", metavar="CODEC:KBPS,...",
                        help="reference codecs scored on the trials' validation split and drawn "
                        "on the rate-distortion plots: opus or mp3 at kbit/s (e.g. "
                        "opus:6,opus:12,mp3:32; needs ffmpeg)")


def checked_anchors(text: str | None) -> list[Anchor]:
    """``--anchors`` as reference codecs, with an ffmpeg that has their encoders; an AnchorError
    (one line, exit 2) before any work."""
    if not text:
        return []
    from vae.codec.anchors import find_ffmpeg, parse_anchors

    anchors = parse_anchors(text)
    find_ffmpeg(anchors)
    return anchors


def anchor_table(scores: Sequence[AnchorScore]) -> pd.DataFrame:
    """One row per reference codec: its label, coded rate, then its figure on each validation
    metric's axis it has one for (the columns the report's plots read)."""
    rows = []
    for score in scores:
        row: dict[str, Any] = {LABEL: score.label, CODED_KBPS: score.coded_kbps}
        row.update({m.key: score.value(m.key) for m in METRICS.values()
                    if score.value(m.key) is not None})
        rows.append(row)
    return pd.DataFrame(rows)


def score_anchors(config: VAEConfig, anchors: Sequence[Anchor], out: Path) -> pd.DataFrame:
    """The reference codecs scored on ``config``'s validation split, written to OUT/anchors.csv."""
    from vae.codec.validation_anchors import score_on_validation

    table = anchor_table(score_on_validation(config, anchors))
    table.to_csv(out / ANCHORS_CSV, index=False)
    return table


def anchors_markdown(table: pd.DataFrame | None) -> list[str]:
    """The report's (or the study's) section on its reference codecs."""
    if table is None or table.empty:
        return []
    columns = [LABEL, CODED_KBPS, *(METRICS[name].key for name in DISTORTION_NAMES)]
    shown = table.reindex(columns=columns).rename(columns=lambda c: c.removeprefix("val/"))
    return ["## Reference codecs", "",
            "ffmpeg's encoders on the validation split the trials are scored on, at the same "
            "level and by the same metrics; rate: the coded file's size (container included), "
            "drawn on the latent rate's axis. One decoding: its distortion stands for the mean "
            f"and the sampled one. Written to {ANCHORS_CSV}.", "",
            shown.to_markdown(index=False, floatfmt=".4g"), ""]


def draw_anchors(ax: Any, references: pd.DataFrame | None, x: str, y: str,
                 named: bool = True) -> None:
    """The reference codecs with figures on both axes as diamonds, each named beside it unless
    the caller places the names (``named`` False)."""
    if references is None or references.empty:
        return
    ax.scatter(references[x], references[y], zorder=3, label="reference codec (coded rate)",
               **STYLE)
    for _, row in references.iterrows() if named else ():
        ax.annotate(row[LABEL], (row[x], row[y]), xytext=(4, 4), fontsize=7,
                    textcoords="offset points", color=STYLE["color"])
