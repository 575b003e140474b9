"""A bundle as an MLflow model (pyfunc), so it can be registered and loaded by ``models:/`` URI.

The pyfunc's ``predict`` takes a float array [batch, channels, samples] (or [channels, samples])
at the model's sample rate and returns the reconstruction."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import torch

from vae.inference.bundle import BundleError, load_bundle
from vae.user_files import UserFileError, load_yaml_file

BUNDLE_ARTIFACT = "bundle"


class BundlePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # untyped: MLflow reads predict's hints as a schema
        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):
        audio = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        squeeze = audio.ndim == 2
        audio = audio[None] if squeeze else audio
        with torch.no_grad():
            out = self.bundle.model(audio).reconstruction
        return (out[0] if squeeze else out).numpy()


_MLFLOW_LOCK = threading.Lock()


@contextmanager
def tracking_uri_set_to(uri: str | None) -> Iterator[None]:
    """MLflow's tracking and registry URIs set to ``uri`` for the block, then put back as they
    were. The fluent API and ``models:/`` resolution read process-global URIs (and setting them
    also sets $MLFLOW_TRACKING_URI, which child processes inherit); the app serves many sessions
    from one process, hence the lock. ``None`` leaves everything as it is."""
    if not uri:
        yield
        return
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    with _MLFLOW_LOCK:
        saved_tracking = getattr(tracking_utils, "_tracking_uri", None)
        saved_registry = getattr(registry_utils, "_registry_uri", None)
        saved_env = [os.environ.get(n) for n in names]
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved_tracking)
            mlflow.set_registry_uri(saved_registry)
            for name, value in zip(names, saved_env, strict=True):
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def log_bundle_model(bundle_dir: str | Path, registered_name: str | None = None,
                     run_id: str | None = None, tracking_uri: str | None = None) -> str | None:
    """Logs the bundle as model ``model`` of ``run_id`` (a new run if None); returns the registered
    version when ``registered_name`` is given."""
    with tracking_uri_set_to(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=BundlePyfunc(),
                                       artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                                       registered_model_name=registered_name)
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


def bundle_in_model_dir(folder: Path) -> Path:
    """The bundle inside a downloaded pyfunc model: where its MLmodel says the ``bundle`` artifact
    is (MLflow names the copy after the logged folder, not after the artifact key). The MLmodel is
    read strictly, and a path leading out of the model's folder is refused."""
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return folder
    try:
        spec = load_yaml_file(mlmodel)
    except UserFileError as exc:
        raise BundleError(str(exc)) from None
    try:
        relative = spec["flavors"]["python_function"]["artifacts"][BUNDLE_ARTIFACT]["path"]
    except (KeyError, TypeError):  # not a model logged by log_bundle_model
        relative = None
    if not isinstance(relative, str) or not relative:
        return folder
    bundle = (folder / relative).resolve()
    if not bundle.is_relative_to(folder.resolve()):
        raise BundleError(f"{mlmodel}: the bundle artifact's path {relative!r} leads out of the "
                          "model's folder")
    return bundle


def resolve_model_dir(uri: str, tracking_uri: str | None = None) -> Path:
    """A local bundle folder for an MLflow model URI (models:/NAME@alias, runs:/ID/model)."""
    with tracking_uri_set_to(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return bundle_in_model_dir(local)
