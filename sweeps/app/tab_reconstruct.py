"""The Reconstruct tab: the clip's metrics, original and reconstruction, and their figure."""

from __future__ import annotations

import math

import streamlit as st

from sweeps.app.clips import wav_bytes
from sweeps.app.plots import comparison_png
from sweeps.app.session import Selection, remember
from vae.metric_table import DISTORTION_NAMES, METRICS

# The clip's quality (of the reconstruction played: the posterior mean's) and its rate;
# active_units counts latent channels, a model property, so it is left to the bundle's metrics.
SHOWN_METRICS = [*DISTORTION_NAMES, METRICS["kl_kbps"].name]


def reconstruct_tab(sel: Selection) -> None:
    result = sel.result
    for column, name in zip(st.columns(len(SHOWN_METRICS)), SHOWN_METRICS):
        value = result.metrics.get(name)
        column.metric(name, "–" if value is None or not math.isfinite(value) else f"{value:.4g}")
    left, right = st.columns(2)
    left.markdown("**Original**")
    left.audio(wav_bytes(result.audio, sel.sample_rate), format="audio/wav")
    right.markdown("**Reconstruction**")
    right.audio(wav_bytes(result.reconstruction, sel.sample_rate), format="audio/wav")
    st.image(remember(sel.key("plot"), lambda: comparison_png(
        {"original": result.audio, "reconstruction": result.reconstruction}, sel.sample_rate)))
