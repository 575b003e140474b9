"""The listening room's page (see sweeps/app/__init__.py). Start it with ``vae-app`` (loopback,
upload cap, read roots: sweeps/app/cli.py), or from the project root with
``streamlit run sweeps/app/page.py``, which reads the same settings through the root's
.streamlit/config.toml. Served on every interface without being told to (Streamlit's default
elsewhere), the page refuses to run: ``--server.address 0.0.0.0`` says so explicitly."""

from __future__ import annotations

import streamlit as st

from sweeps.app.clips import EXAMPLE, Clip, load_clip, run_model
from sweeps.app.session import Selection, remember, uploaded_clip
from sweeps.app.sidebar import NoModel, clip_sidebar, model_sidebar
from sweeps.app.tab_ab import ab_tab
from sweeps.app.tab_compress import compress_tab
from sweeps.app.tab_latent import latent_tab
from sweeps.app.tab_reconstruct import reconstruct_tab
from vae.inference import AUDIO_EXTENSIONS, AudioError, Bundle

TITLE = "Audio VAE listening room"
TABS = {"Reconstruct": reconstruct_tab, "Latent controls": latent_tab,
        "A/B sweep trials": ab_tab, "Compress": compress_tab}


def select_clip(spec: str, bundle: Bundle, max_seconds: float, example_seconds: float) -> Selection:
    """The uploaded clip (else the synthetic example), loaded and reconstructed; stops the page
    when the upload is not audio."""
    upload = st.file_uploader("Audio file (wav, flac, ogg, …); without one a synthetic example "
                              "clip is used", type=[e.lstrip(".") for e in AUDIO_EXTENSIONS],
                              key="upload_a")
    clip = uploaded_clip(upload) or Clip(EXAMPLE, None, 0)
    if upload is not None and clip.data is None:  # refused: too large
        st.stop()
    seconds = max_seconds if clip.data is not None else min(max_seconds, example_seconds)
    try:
        audio = remember(("clip", spec, clip.key, seconds), lambda: load_clip(clip, bundle, seconds))
    except AudioError as exc:
        st.error(f"Cannot use {clip.name}: {exc}")
        st.stop()
    result = remember(("run", spec, clip.key, seconds), lambda: run_model(bundle, audio))
    return Selection(spec, bundle, clip, seconds, audio, result)


def refuse_every_interface_by_default() -> None:
    """Stops the page when a real server (a browser's request has headers) listens on every
    interface because no address was set: Streamlit's default, not the user's choice."""
    if not st.get_option("server.address") and st.context.headers:
        st.error("This server listens on every network interface because no address was set. "
                 "Start it with `vae-app`, or `streamlit run sweeps/app/page.py` from the project "
                 "root (127.0.0.1); to serve other machines, pass --server.address 0.0.0.0.")
        st.stop()


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon="🎧", layout="wide")
    st.title(TITLE)
    refuse_every_interface_by_default()
    no_model: NoModel | None = None
    with st.sidebar:
        try:
            spec, bundle = model_sidebar()
        except NoModel as exc:
            no_model = exc
        max_seconds, example_seconds = clip_sidebar()
    if no_model is not None:
        (st.info if no_model.hint else st.error)(str(no_model))
        st.stop()
    sel = select_clip(spec, bundle, max_seconds, example_seconds)
    st.caption(f"Clip: **{sel.clip.name}**, {sel.audio.shape[-1] / sel.sample_rate:.2f} s at "
               f"{sel.sample_rate} Hz, {sel.audio.shape[0]} ch → latents "
               f"{tuple(sel.result.mean.shape)}")
    for tab, render in zip(st.tabs(list(TABS)), TABS.values()):
        with tab:
            render(sel)


if __name__ == "__main__":
    main()
