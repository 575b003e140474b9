"""The Compress tab: the clip's posterior written as a real ``.vaec`` file, exactly as
vae-compress writes one, read back and decoded; its size and rates, and its audio beside the
original and beside Opus at the same coded rate (ffmpeg's libopus, as ``vae-evaluate
--anchors``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pandas as pd
import streamlit as st
import torch

from sweeps.app.clips import decode, score_against, wav_bytes
from sweeps.app.session import Selection, remember
from vae.codec import CodecError, compress_at_kbps, compress_latents, decompress_latents
from vae.codec.anchors import (ANCHOR_CODECS, Anchor, AnchorError, CodecOptions,
                               anchor_round_trip, find_ffmpeg)
from vae.codec.files import SCALE_RANGE, coded_kbps
from vae.inference import AudioInfo, Latents
from vae.inference.latents import posterior_latents
from vae.metric_table import DISTORTION_NAMES

DEFAULTS = CodecOptions()  # vae-evaluate --codec's: dithered from seed 0, Gaussian entropy model
SCALE, TARGET = "Scale", "Target kbit/s"
MIN_KBPS, DEFAULT_KBPS = 0.1, 8.0
OPUS = "opus"
MISSING = "–"


@dataclass(frozen=True)
class Coded:
    """A coded and decoded clip: its audio, the coded file's rate and the clip's metrics."""

    audio: torch.Tensor
    bytes: int
    kbps: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class Compressed:
    data: bytes  # the .vaec file
    written: dict[str, Any]  # what compress_latents reports of it
    coded: Coded


def clip_latents(sel: Selection) -> Latents:
    """The clip's posterior with the metadata vae-compress records (as codec_decoding builds
    it); the source is the clip as the page holds it: at the model's rate, as floats."""
    result = sel.result
    channels, length = sel.audio.shape
    info = AudioInfo(sel.clip.name, sel.sample_rate, channels, length, "", "FLOAT")
    return posterior_latents(sel.bundle, info, length, result.mean.cpu(), result.std.cpu())


def vaec_name(sel: Selection) -> str:
    return f"{Path(sel.clip.name).stem}.vaec"


def compress_clip(sel: Selection, mode: str, value: float, dither_seed: int | None) -> Compressed:
    """The clip's .vaec file at the ``value`` scale or target kbit/s, read back and decoded;
    CodecError for a target the coarsest quantiser cannot reach."""
    latents = clip_latents(sel)
    coding: dict[str, Any] = {"entropy_model": DEFAULTS.entropy_model, "dither_seed": dither_seed}
    with TemporaryDirectory(prefix="vae-app-codec-") as folder:
        path = Path(folder, vaec_name(sel))
        try:
            if mode == TARGET:
                written = compress_at_kbps(latents, sel.bundle, path, value, **coding)
            else:
                written = compress_latents(latents, sel.bundle, path, scale=value, **coding)
        except CodecError as exc:  # named as the user knows the file, not by the temporary folder
            raise CodecError(str(exc).replace(str(path), path.name)) from None
        data = path.read_bytes()
        latent = decompress_latents(path, sel.bundle).mean
    audio = decode(sel.bundle, latent, latents.length)
    metrics = score_against(sel.bundle, sel.result, audio)
    return Compressed(data, written, Coded(audio, len(data), written["coded_kbps"], metrics))


def opus_anchor(kbps: float) -> Anchor:
    """Opus at ``kbps``, brought within what libopus takes."""
    low, high = ANCHOR_CODECS[OPUS].kbps_range
    return Anchor(OPUS, min(max(kbps, low), high))


def opus_clip(sel: Selection, anchor: Anchor) -> Coded:
    """The clip through ffmpeg's libopus; AnchorError when ffmpeg or libopus is missing."""
    ffmpeg = find_ffmpeg([anchor], flag=None)
    audio, size = anchor_round_trip(sel.audio, sel.sample_rate, anchor, ffmpeg)
    seconds = sel.audio.shape[-1] / sel.sample_rate
    metrics = score_against(sel.bundle, sel.result, audio)
    return Coded(audio, size, coded_kbps(size, seconds), metrics)


def shown(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def figures(compressed: Compressed, opus: Coded | None) -> pd.DataFrame:
    """One row per codec: its file's size and rates, and its decoding's distortions."""
    written = compressed.written
    rows = {".vaec": (compressed.coded, written["ideal_kbps"], written["kl_kbps"])}
    if opus is not None:
        rows["Opus"] = (opus, None, None)
    return pd.DataFrame.from_dict({
        name: {"bytes": str(coded.bytes), "coded kbit/s": shown(coded.kbps),
               "ideal kbit/s": shown(ideal), "KL kbit/s": shown(kl),
               **{metric: shown(coded.metrics.get(metric)) for metric in DISTORTION_NAMES}}
        for name, (coded, ideal, kl) in rows.items()}, orient="index")


def rate_controls() -> tuple[str, float, int | None]:
    mode_column, value_column, dither_column = st.columns(3)
    mode = mode_column.radio("Rate", [SCALE, TARGET], key="compress_mode", horizontal=True)
    if mode == SCALE:
        value = value_column.number_input(
            "Quantiser scale (1: steps matched to the posterior's noise; larger is coarser)",
            min_value=SCALE_RANGE[0], max_value=SCALE_RANGE[1], value=DEFAULTS.scale, step=0.1,
            key="compress_scale")
    else:
        value = value_column.number_input(
            "Target kbit/s (the finest quantiser whose file fits, header included)",
            min_value=MIN_KBPS, value=DEFAULT_KBPS, step=1.0, key="compress_kbps")
    dither = dither_column.checkbox(f"Subtractive dither (seed {DEFAULTS.dither_seed})",
                                    value=DEFAULTS.dither_seed is not None, key="compress_dither")
    return mode, float(value), DEFAULTS.dither_seed if dither else None


def compress_tab(sel: Selection) -> None:
    mode, value, dither_seed = rate_controls()
    try:
        compressed = remember(sel.key("compress", mode, value, dither_seed),
                              lambda: compress_clip(sel, mode, value, dither_seed))
    except CodecError as exc:
        st.error(str(exc))
        return
    written, coded = compressed.written, compressed.coded
    anchor = opus_anchor(coded.kbps)
    opus, opus_problem = None, None
    try:
        opus = remember(sel.key("opus", anchor.kbps), lambda: opus_clip(sel, anchor))
    except AnchorError as exc:
        opus_problem = str(exc)
    st.table(figures(compressed, opus))
    st.caption(f"Quantiser scale {written['scale']:.4g}, {written['entropy_model']} entropy model, "
               f"dither seed {written['dither_seed']}, {written['blocks']} block(s); the header "
               f"is {written['header_bytes']} of the {coded.bytes} bytes. Opus asked for "
               f"{anchor.kbps:.4g} kbit/s; its row is the size of the Ogg file ffmpeg wrote.")
    original, vaec, reference = st.columns(3)
    original.markdown("**Original**")
    original.audio(wav_bytes(sel.audio, sel.sample_rate), format="audio/wav")
    vaec.markdown(f"**Decompressed .vaec**, {coded.kbps:.3g} kbit/s")
    vaec.audio(wav_bytes(coded.audio, sel.sample_rate), format="audio/wav")
    if opus is None:
        reference.info(f"No Opus to compare with: {opus_problem}")
    else:
        reference.markdown(f"**Opus**, {opus.kbps:.3g} kbit/s")
        reference.audio(wav_bytes(opus.audio, sel.sample_rate), format="audio/wav")
    st.download_button("Download the .vaec file", compressed.data, key="compress_download",
                       file_name=vaec_name(sel),
                       mime="application/octet-stream")
