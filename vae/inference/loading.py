"""A model by name: a bundle folder, or an MLflow model URI (``models:/NAME@champion``,
``runs:/ID/model``) downloaded to one. Apart from bundle.py because MLflow's side (mlflow_model.py)
itself loads bundles, and is slow to import: it is only imported for a URI."""

from __future__ import annotations

from pathlib import Path

import torch

from vae.inference.bundle import Bundle, BundleError, load_bundle


def is_model_uri(spec: str | Path) -> bool:
    """An MLflow model URI (models:/, runs:/, or any scheme://) rather than a bundle folder."""
    spec = str(spec)
    return "://" in spec or spec.startswith(("models:", "runs:"))


def load_model(spec: str | Path, device: str | torch.device = "cpu",
               tracking_uri: str | None = None) -> Bundle:
    """A bundle folder, or an MLflow model URI resolved to one (``models:/NAME@alias``,
    ``runs:/ID/model``) through ``tracking_uri`` (default: $MLFLOW_TRACKING_URI)."""
    spec = str(spec)
    if is_model_uri(spec):
        from vae.inference.mlflow_model import resolve_model_dir  # MLflow is slow to import

        try:
            folder = resolve_model_dir(spec, tracking_uri)
        except Exception as exc:  # MLflow raises its own types for unknown models/aliases/runs
            raise BundleError(f"{spec}: cannot resolve the MLflow model URI: {exc}") from exc
    else:
        folder = Path(spec)
    if not folder.exists():
        raise BundleError(f"{spec}: no such bundle folder")
    bundle = load_bundle(folder, device)
    bundle.spec = spec if is_model_uri(spec) else str(folder.resolve())  # what encode records
    return bundle


def model_spec(bundle: Bundle) -> str:
    """How to load ``bundle`` again: the MLflow URI it came from, or its absolute folder."""
    return bundle.spec or str(Path(bundle.path).resolve())
