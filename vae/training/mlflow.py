"""MLflow for training: where runs are tracked, and the Lightning logger that writes them."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
from mlflow.tracking import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger

from vae.config import VAEConfig
from vae.metric_table import BEST_PREFIX, METRICS, best_metric

DEFAULT_TRACKING_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside a sqlite store, for single runs and sweeps alike
# MLflow 3's UI opens an experiment in its GenAI (traces) view unless this tag says it holds model
# training; the values are the UI's ExperimentKind enum (mlflow/server/js, "experimentKind").
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
# MLflow announces creating and migrating a sqlite store's tables at INFO, on every new store.
STORE_LOGGER = "mlflow.store.db.utils"
STORE_SETUP_LOGGERS = (STORE_LOGGER, "alembic.runtime.migration")
log = logging.getLogger(__name__)
T = TypeVar("T")


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


# MLflow 3.17's UI picks its GenAI or model-training pages from a browser-wide switch (default
# GenAI), not from the experiment's tag: a link with this parameter opens on the runs table.
MODEL_TRAINING_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default

# A sweep's runs in MLflow (sweeps/execution/trial.py and sweeps/execution/tracking.py log them;
# named here for the runs table's view below): each trial's best report under best/ (best/objective,
# best/step, best/val/<metric>), the objective of every validation, and what that objective is.
OBJECTIVE_METRIC = "objective"
BEST_OBJECTIVE_METRIC, BEST_STEP_METRIC = BEST_PREFIX + OBJECTIVE_METRIC, BEST_PREFIX + "step"
SWEEP_TAG, OUTCOME_TAG, OBJECTIVE_FORMULA_TAG = "sweep.name", "sweep.outcome", "objective_formula"

# MLflow 3.17's runs page reads its sort from the URL (orderByKey, orderByAsc) but its columns only
# from its UI state, which a link sets only through a saved view: an experiment tag
# mlflow.sharedViewState.<id> (the envelope {name, createdAt, state}) that ?viewStateShareKey=<id>
# opens on the /runs route and the page's "Views" menu lists (mlflow/server/js, "sharedViewState").
SAVED_VIEW_TAG, VIEW_QUERY = "mlflow.sharedViewState.", "viewStateShareKey"
# Sorting by anything but the start time flattens the parent/child nesting in 3.17 (its table
# nests children only when unsorted or sorted by start time, and unfiltered). Ranked is the better
# default: a sweep's link is opened to see which trial is best; each row names its sweep and
# outcome, and the parent run (carrying its best trial's best/ metrics) sits beside that trial.
BEST_FIRST = {"min": "lowest", "max": "highest"}  # the saved views, one per objective direction


def view_id(mode: str) -> str:
    """The saved view ranking trials best first for ``mode``: ``trials-lowest-objective-first``."""
    return f"trials-{BEST_FIRST[mode]}-objective-first"


def best_first_view(mode: str) -> dict[str, Any]:
    """The runs table's state in the saved view: sorted by the best objective, best first for
    ``mode``; its columns, in this order and wide enough for their names: the best objective, the
    distortion and the rate it is made of (the report's rate-distortion pair: a sampled latent's
    distortion, the KL rate), the best step, the outcome, the sweep and the objective's formula.
    The best report's other metrics are one click away (Columns)."""
    metrics = [BEST_OBJECTIVE_METRIC, best_metric(METRICS["mel_distance_sampled"].key),
               best_metric(METRICS["kl_kbps"].key), BEST_STEP_METRIC]
    columns = [f"metrics.`{m}`" for m in metrics] + \
        [f"tags.`{t}`" for t in (OUTCOME_TAG, SWEEP_TAG, OBJECTIVE_FORMULA_TAG)]
    widths = [120, 230, 120, 80, 110, 110, 420]  # pixels: about 8 a letter of a name or a value
    return {"orderByKey": columns[0], "orderByAsc": mode == "min", "selectedColumns": columns,
            "columnOrder": columns, "columnWidths": dict(zip(columns, widths))}


def saved_view(name: str, state: dict[str, Any], created_ms: int) -> str:
    """A saved view's tag value as the UI writes and reads it (its state a JSON string)."""
    return json.dumps({"name": name, "createdAt": created_ms, "state": json.dumps(state)})


def same_view(tag_value: str | None, name: str, state: dict[str, Any]) -> bool:
    try:
        view = json.loads(tag_value or "")
        return view["name"] == name and json.loads(view["state"]) == state
    except (ValueError, KeyError, TypeError):
        return False


def ensure_runs_views(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """The experiment's best-first views (one per objective direction), written when missing or
    different (``tags``: the experiment's), so every experiment's link opens on one."""
    for mode, first in BEST_FIRST.items():
        tag, name = SAVED_VIEW_TAG + view_id(mode), f"Sweep trials, {first} objective first"
        if not same_view(tags.get(tag), name, best_first_view(mode)):
            client.set_experiment_tag(experiment_id, tag, saved_view(
                name, best_first_view(mode), int(time.time() * 1000)))


def runs_page(tracking_uri: str, experiment_id: str, mode: str | None) -> str:
    """The address of the experiment's runs table, on the tracking server or on `mlflow ui`:
    opened on the view ranking trials best first for the objective's ``mode``, or (None) as
    MLflow opens it."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else LOCAL_UI
    if mode is None:
        return f"{base}/#/experiments/{experiment_id}?{MODEL_TRAINING_QUERY}"
    return (f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_QUERY}"
            f"&{VIEW_QUERY}={view_id(mode)}")


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a local sqlite store, artifacts go beside the database (not into whatever cwd a process
    has); a tracking server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).resolve().as_uri()
    return None


def quiet_store_setup() -> None:
    """Keep MLflow's warnings, drop its INFO lines about creating a store's tables."""
    for logger_name in STORE_SETUP_LOGGERS:
        logging.getLogger(logger_name).setLevel(logging.WARNING)


def store_error_line(exc: BaseException) -> str:
    """A failed MLflow call as one short line: the error's type and its message's first line."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}"


def _below_error(record: logging.LogRecord) -> bool:  # a logging filter
    return record.levelno < logging.ERROR


def quiet_store_errors() -> None:
    """For a process that reports MLflow failures itself (a sweep's driver and trials): MLflow
    logs every sqlite error at ERROR with its traceback before raising it, which would repeat
    the failure as a traceback at every call while the store is down."""
    logging.getLogger(STORE_LOGGER).addFilter(_below_error)  # adding it again does nothing


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created beforehand with the shared artifact location (runs must never
    race to create it), restored if deleted, tagged as model training for the UI, with the runs
    table's best-first views."""
    quiet_store_setup()  # for a client that has not opened its store yet
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    tags = experiment.tags if experiment is not None else {}
    if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    ensure_runs_views(client, experiment_id, tags)
    return experiment_id


class TrackingGuard:
    """MLflow calls that must not fail the training they record (a sweep trial's): the first
    failure (store gone, read-only, locked) is one warning line naming ``owner``, and every later
    call is skipped, so a store that breaks mid-run costs one line, not a traceback per step (nor
    a stall per step on a server that no longer answers)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.failed = False

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``function(*args, **kwargs)``; None when it fails or the store already has."""
        if self.failed:
            return None
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            self.failed = True
            log.warning("%s: MLflow failed in %s, not tracked from here on; the training goes "
                        "on (%s)", self.owner, getattr(function, "__name__", "a call"),
                        store_error_line(exc))
            return None

    @contextlib.contextmanager
    def active(self) -> Iterator[TrackingGuard]:
        """The guard every CallerOwnedMLFlowLogger created in the block uses, so a trial's own
        calls and its Lightning logger warn once between them."""
        token = ACTIVE_GUARD.set(self)
        try:
            yield self
        finally:
            ACTIVE_GUARD.reset(token)


ACTIVE_GUARD: ContextVar[TrackingGuard | None] = ContextVar("tracking_guard", default=None)


class GuardedClient:
    """An MlflowClient whose every method call goes through a TrackingGuard."""

    def __init__(self, client: MlflowClient, guard: TrackingGuard) -> None:
        self._client, self._guard = client, guard

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return functools.partial(self._guard.call, attribute) if callable(attribute) else attribute


class CallerOwnedMLFlowLogger(MLFlowLogger):
    """Logs to a run the caller opened and ends (a sweep trial: the driver knows whether the run
    was pruned). It never sets the run's status, and a failing store never fails the training:
    its calls go through the caller's active TrackingGuard, else one of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = ACTIVE_GUARD.get() or TrackingGuard(f"run {self._run_id}")

    @property
    def experiment(self) -> Any:
        self.guard.call(MLFlowLogger.experiment.fget, self)  # looks the run up, the first time
        return GuardedClient(self._mlflow_client, self.guard)

    def finalize(self, status: str = "success") -> None:
        return None


def build_mlflow_logger(config: VAEConfig, run_id: str | None = None,
                        owns_run_status: bool = True) -> MLFlowLogger | None:
    if not config.tracking.enabled:
        return None
    logger_class = MLFlowLogger if owns_run_status else CallerOwnedMLFlowLogger
    tracking_uri = resolve_tracking_uri(config.tracking.tracking_uri)
    if run_id is None:  # a caller's run (a sweep trial) lives in an experiment already prepared
        quiet_store_setup()  # before the client below opens the store
        ensure_experiment(MlflowClient(tracking_uri), config.tracking.experiment,
                          default_artifact_location(tracking_uri))
    return logger_class(experiment_name=config.tracking.experiment, tracking_uri=tracking_uri,
                        run_name=config.tracking.run_name, run_id=run_id, log_model=False)


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    """The trainer's MLflow logger, if it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None
