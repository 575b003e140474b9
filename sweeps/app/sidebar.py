"""The sidebar: which model (bundle folder or registered MLflow model) and the clip lengths."""

from __future__ import annotations

import os

import streamlit as st

from sweeps.app.access import (MODEL_ENV, TRACKING_URIS_ENV, NotAllowed, allowed_model,
                               allowed_tracking_uri, setting, tracking_uri_given, tracking_uris)
from sweeps.app.models import bundle_roots, describe_model, discover_bundles, registered_model_uris
from sweeps.app.session import get_model
from vae.inference import Bundle, BundleError

BUNDLE_SOURCE, REGISTRY_SOURCE = "Bundle folder", "Registered model (MLflow)"


class NoModel(Exception):
    """Why no model can be loaded yet; the page shows it in its main area (a message only in
    the sidebar leaves the page blank). ``hint`` is a prompt rather than an error."""

    def __init__(self, message: str, hint: bool = False) -> None:
        super().__init__(message)
        self.hint = hint


def pick_bundle_folder() -> str:
    found = [str(p) for p in discover_bundles(bundle_roots())]
    default = os.environ.get(MODEL_ENV, found[0] if found else "")
    spec = st.text_input("Bundle folder", value=default, key="bundle_path",
                         help="a folder written by vae-export / sweep-export, under the app's "
                         "bundle roots")
    if found:
        st.caption("Bundles found: " + ", ".join(f"`{p}`" for p in found[:5]))
    if not spec:
        return spec
    try:
        return allowed_model(spec)
    except NotAllowed as exc:  # outside the roots or missing: one message, no probing
        raise NoModel(str(exc)) from None


def pick_registered_model() -> tuple[str, str]:
    # Only the URIs the operator allowed at start: the page never makes the server fetch a URL
    # (or open a file) that a visitor typed.
    if not tracking_uri_given():
        raise NoModel(f"No MLflow tracking store was given: start the app with "
                      f"{setting(TRACKING_URIS_ENV)} or $MLFLOW_TRACKING_URI to pick a registered "
                      "model, or choose a bundle folder.", hint=True)
    try:
        tracking_uri = allowed_tracking_uri(st.selectbox("MLflow tracking URI", tracking_uris(),
                                                         key="tracking_uri"))
    except NotAllowed as exc:
        raise NoModel(str(exc)) from None
    try:
        uris = registered_model_uris(tracking_uri)
    except Exception as exc:
        raise NoModel(f"Cannot list registered models at {tracking_uri}: {exc}") from None
    if not uris:
        raise NoModel(f"No registered models at {tracking_uri} (sweep-export SWEEP -o DIR "
                      "--register NAME).", hint=True)
    choice = st.selectbox("Registered model", uris, key="registered_uri")
    if choice not in uris:  # a value forced into the session state is not an option
        raise NoModel("Pick one of the registered models listed.")
    return choice, tracking_uri


def model_sidebar() -> tuple[str, Bundle]:
    """(spec, bundle) of the model picked; NoModel until one loads."""
    st.header("Model")
    kind = st.radio("Source", [BUNDLE_SOURCE, REGISTRY_SOURCE], key="model_kind")
    tracking_uri = None
    if kind == BUNDLE_SOURCE:
        spec = pick_bundle_folder()
    else:
        spec, tracking_uri = pick_registered_model()
    if not spec:
        raise NoModel(f"Enter a bundle folder (or set {MODEL_ENV}) to start.", hint=True)
    try:
        bundle = get_model(spec, tracking_uri)
    except BundleError as exc:
        raise NoModel(str(exc)) from None
    st.caption(" · ".join(f"{k} **{v}**" for k, v in describe_model(bundle).items()))
    if bundle.metrics:
        with st.expander("Validation metrics of this bundle"):
            st.json(bundle.metrics)
    return spec, bundle


def clip_sidebar() -> tuple[float, float]:
    """(longest clip, example clip length) in seconds."""
    st.header("Clip")
    max_seconds = st.slider("Longest clip (s)", 1.0, 60.0, 10.0, 1.0, key="max_seconds")
    example_seconds = st.slider("Example clip length (s)", 0.5, 10.0, 3.0, 0.5, key="example_seconds")
    return max_seconds, example_seconds
