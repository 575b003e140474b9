"""MLflow for training: where runs are tracked, and the Lightning logger that writes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger

from vae.config import VAEConfig

DEFAULT_TRACKING_DB = "mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else ./mlflow.db; always absolute, because Ray
    runs trials in their own working directories."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_TRACKING_DB}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).resolve().as_uri()
    if "://" not in uri and ":" not in uri[:3]:
        return Path(uri).resolve().as_uri()
    return uri


class CallerOwnedMLFlowLogger(MLFlowLogger):
    """Logs to a run whose final status the caller sets (e.g. a sweep driver that knows whether
    the run was pruned); it never marks the run finished or failed itself."""

    def finalize(self, status: str = "success") -> None:
        return None


def build_mlflow_logger(config: VAEConfig, run_id: str | None = None,
                        owns_run_status: bool = True) -> MLFlowLogger | None:
    if not config.tracking.enabled:
        return None
    logger_class = MLFlowLogger if owns_run_status else CallerOwnedMLFlowLogger
    return logger_class(experiment_name=config.tracking.experiment,
                        tracking_uri=resolve_tracking_uri(config.tracking.tracking_uri),
                        run_name=config.tracking.run_name, run_id=run_id, log_model=False)


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    """The trainer's MLflow logger, if it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None
