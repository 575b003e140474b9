"""The Latent controls tab: scale or offset channels, interpolate between two clips, sample
from the prior."""

from __future__ import annotations

import math

import streamlit as st

from sweeps.app.clips import (EXAMPLE, Clip, decode, edit_latent, interpolate_latents, load_clip,
                              run_model, sample_prior, wav_bytes)
from sweeps.app.plots import comparison_png
from sweeps.app.session import Selection, remember, uploaded_clip
from vae.inference import AUDIO_EXTENSIONS, AudioError


def edit_section(sel: Selection) -> None:
    st.subheader("Scale or offset channels")
    latent_dim = sel.bundle.config.model.latent_dim
    chosen = st.multiselect("Latent channels", list(range(latent_dim)), default=[0], key="channels")
    scale = st.slider("Scale", -3.0, 3.0, 1.0, 0.1, key="scale")
    offset = st.slider("Offset", -3.0, 3.0, 0.0, 0.1, key="offset")
    edit = (tuple(chosen), scale, offset)
    edited = remember(sel.key("edit", *edit), lambda: decode(
        sel.bundle, edit_latent(sel.result.mean, chosen, scale, offset), sel.audio.shape[-1]))
    st.audio(wav_bytes(edited, sel.sample_rate), format="audio/wav")
    st.image(remember(sel.key("plot-edit", *edit), lambda: comparison_png(
        {"reconstruction": sel.result.reconstruction, "edited": edited}, sel.sample_rate)))


def interpolate_section(sel: Selection) -> None:
    st.subheader("Interpolate between two clips")
    upload_b = st.file_uploader("Second clip (without one: another synthetic clip)",
                                type=[e.lstrip(".") for e in AUDIO_EXTENSIONS], key="upload_b")
    clip_b = uploaded_clip(upload_b) or Clip(EXAMPLE, None, 1)
    if upload_b is not None and clip_b.data is None:  # refused: too large
        return
    try:
        audio_b = remember(("clip", sel.spec, clip_b.key, sel.seconds),
                           lambda: load_clip(clip_b, sel.bundle, sel.seconds))
    except AudioError as exc:
        st.error(f"Cannot use {clip_b.name}: {exc}")
        return
    result_b = remember(("run-b", sel.spec, clip_b.key, sel.seconds),
                        lambda: run_model(sel.bundle, audio_b, with_metrics=False))
    alpha = st.slider("α (0 = first clip, 1 = second)", 0.0, 1.0, 0.5, 0.05, key="alpha")
    mixed = remember(sel.key("mix", clip_b.key, alpha), lambda: decode(
        sel.bundle, interpolate_latents(sel.result.mean, result_b.mean, alpha)))
    st.audio(wav_bytes(mixed, sel.sample_rate), format="audio/wav")
    st.image(remember(sel.key("plot-mix", clip_b.key, alpha), lambda: comparison_png(
        {"first": sel.result.reconstruction, "interpolated": mixed,
         "second": result_b.reconstruction}, sel.sample_rate)))


def prior_section(sel: Selection) -> None:
    st.subheader("Sample from the prior")
    prior_seconds = st.slider("Length (s)", 0.5, 10.0, 2.0, 0.5, key="prior_seconds")
    temperature = st.slider("Temperature", 0.0, 2.0, 1.0, 0.1, key="temperature")
    seed = int(st.number_input("Seed", 0, 2 ** 31 - 1, 0, key="prior_seed"))
    frames = max(1, math.ceil(prior_seconds * sel.bundle.model.frame_rate))
    latent_dim = sel.bundle.config.model.latent_dim
    sampled = remember(("prior", sel.spec, frames, temperature, seed), lambda: decode(
        sel.bundle, sample_prior(latent_dim, frames, temperature, seed)))
    st.audio(wav_bytes(sampled, sel.sample_rate), format="audio/wav")
    st.image(remember(("plot-prior", sel.spec, frames, temperature, seed),
                      lambda: comparison_png({"prior sample": sampled}, sel.sample_rate)))


def latent_tab(sel: Selection) -> None:
    edit_section(sel)
    interpolate_section(sel)
    prior_section(sel)
