"""A bundle as an MLflow model (pyfunc), so it can be registered and loaded by ``models:/`` URI.

The pyfunc's ``predict`` takes a float array [batch, channels, samples] (or [channels, samples])
at the model's sample rate and returns the reconstruction."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

BUNDLE_ARTIFACT = "bundle"


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # untyped: MLflow reads predict's hints as a schema
        from vae.export import load_bundle

        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):
        audio = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        squeeze = audio.ndim == 2
        audio = audio[None] if squeeze else audio
        with torch.no_grad():
            out = self.bundle.model(audio).reconstruction
        return (out[0] if squeeze else out).numpy()


@contextmanager
def tracking_uri_set_to(uri: str) -> Iterator[None]:
    """MLflow's fluent API needs a global tracking URI (and sets $MLFLOW_TRACKING_URI, which child
    processes inherit); set it for the block only."""
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def log_bundle_model(bundle_dir: str | Path, registered_name: str | None = None,
                     run_id: str | None = None, tracking_uri: str | None = None) -> str | None:
    """Logs the bundle as model ``model`` of ``run_id`` (a new run if None); returns the registered
    version when ``registered_name`` is given."""
    with tracking_uri_set_to(tracking_uri or mlflow.get_tracking_uri()), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=BundlePyfunc(),
                                       artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                                       registered_model_name=registered_name)
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


def resolve_model_dir(uri: str) -> Path:
    """A local bundle folder for a bundle path or an MLflow model URI (models:/, runs:/)."""
    if "://" not in uri and not uri.startswith(("models:", "runs:")):
        return Path(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    nested = local / "artifacts" / BUNDLE_ARTIFACT
    return nested if nested.is_dir() else local
