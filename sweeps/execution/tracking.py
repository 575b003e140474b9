"""MLflow for sweeps: one parent run per sweep, one nested child run per Ray trial.

Ray's own MLflowLoggerCallback duplicates runs after ``Tuner.restore`` and leaves ASHA-stopped
runs RUNNING, so this module owns the runs: a child run is found by its ``ray.trial_id`` tag
before one is created (a resumed trial reattaches), and the driver alone sets final statuses —
live from a Tune callback, and once more from the finished result grid (``reconcile``), which
also repairs what a killed driver or a failing store left RUNNING, and makes the run of a trial
that could not open its own."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

# trial_outcome lives with the ranking rule in layout.py; it is re-exported here for callers.
from sweeps.layout import (OUTCOMES, STATE_FILE, load_state, record_outcomes, trial_dirname,
                           trial_outcome, update_state)
# One experiment setup (shared artifact location, model-training tag) for single runs and sweeps;
# the driver calls it as tracking.ensure_experiment.
from vae.training.mlflow import default_artifact_location, ensure_experiment  # noqa: F401
# The names the runs table's view shows are written beside it (vae/training/mlflow.py).
from vae.metric_table import BEST_PREFIX
from vae.training.mlflow import (BEST_OBJECTIVE_METRIC, OBJECTIVE_FORMULA_TAG, OUTCOME_TAG,
                                 SWEEP_TAG, store_error_line)

TRIAL_TAG = "ray.trial_id"
PARENT_TAG = "mlflow.parentRunId"
ORPHAN_TAG = "sweep.orphaned"
STATUS_FOR_OUTCOME = {"completed": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
BEST_TRIAL_TAG, BEST_RUN_TAG = "best.trial_id", "best.mlflow_run_id"
COUNT_METRIC = "trials/{}"  # the parent run's count of trials per outcome
NOTE_TAG = "mlflow.note.content"  # the run's description, shown on its page in the UI
logger = logging.getLogger(__name__)


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def reachable_tracking_uri(tracking_uri: str, driver_ip: str) -> str:
    """A loopback MLflow server address as the trials on other nodes can reach it: the driver's
    node IP in place of 127.0.0.1/localhost (the server must listen on that interface)."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return tracking_uri
    netloc = driver_ip + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_parent_run(client: MlflowClient, experiment_id: str, sweep_name: str,
                    state_dir: Path) -> str:
    """Create the sweep's parent run, or reattach to the one recorded in the sweep's state."""
    state_file = state_dir / STATE_FILE
    run_id = load_state(state_dir).get("parent_run_id") if state_file.is_file() else None
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(experiment_id, run_name=sweep_name, tags={SWEEP_TAG: sweep_name})
    update_state(state_dir, parent_run_id=run.info.run_id, experiment_id=experiment_id)
    return run.info.run_id


def find_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   trial_id: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=2,
    )
    return runs[0].info.run_id if runs else None


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=10_000)


def open_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str,
                   trial_name: str, sweep_name: str) -> str:
    """The trial's child run: reattached (status back to RUNNING) if it exists, else created."""
    run_id = find_child_run(client, experiment_id, parent_run_id, trial_id)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", "true")
        return run_id
    run = client.create_run(experiment_id, run_name=trial_name, tags={
        PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, SWEEP_TAG: sweep_name})
    return run.info.run_id


def open_missing_run(client: MlflowClient, experiment_id: str, parent_run_id: str,
                     trial_id: str) -> str:
    """A run for a trial that never opened its own (it failed, or the store did, at its start),
    so nothing is lost: one run per trial."""
    sweep_name = client.get_run(parent_run_id).info.run_name
    return open_child_run(client, experiment_id, parent_run_id, trial_id, trial_dirname(trial_id),
                          sweep_name)


def log_sweep_best(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str,
                   value: float) -> None:
    """The sweep's best on its parent run: the metric, which trial and child run reached it, and
    that run's best report (its best/ metrics) and objective formula, so the parent's row in the
    runs table reads as its best trial's."""
    client.log_metric(parent_run_id, BEST_OBJECTIVE_METRIC, value)
    client.set_tag(parent_run_id, BEST_TRIAL_TAG, trial_id)
    run_id = find_child_run(client, experiment_id, parent_run_id, trial_id)
    if run_id:
        client.set_tag(parent_run_id, BEST_RUN_TAG, run_id)
        best = client.get_run(run_id).data
        now = int(time.time() * 1000)
        client.log_batch(parent_run_id, metrics=[
            Metric(key, metric_value, now, 0) for key, metric_value in best.metrics.items()
            if key.startswith(BEST_PREFIX) and key != BEST_OBJECTIVE_METRIC],
            tags=[RunTag(OBJECTIVE_FORMULA_TAG, best.tags[OBJECTIVE_FORMULA_TAG])]
            if OBJECTIVE_FORMULA_TAG in best.tags else [])


def set_outcome(client: MlflowClient, run_id: str, outcome: str, reason: str | None = None) -> None:
    client.set_tag(run_id, OUTCOME_TAG, outcome)
    if reason:
        client.set_tag(run_id, "failure_reason", reason[-4900:])
    client.set_terminated(run_id, STATUS_FOR_OUTCOME[outcome])


class TrialRunStatusCallback(tune.Callback):
    """Driver side: sets each child run's final status as soon as Tune knows it. A tracking
    failure (store gone or read-only) is not an exception inside Tune's loop (which would end
    the sweep) but one warning for the whole sweep; the next trial's end tries again, and the
    end-of-sweep ``reconcile`` sets every status that is still missing."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, max_t: int,
                 time_attr: str, state_dir: Path | None = None) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.max_t, self.time_attr = parent_run_id, max_t, time_attr
        self.state_dir = state_dir  # where the outcome is recorded for the app, live
        self.recorded: set[str] = set()  # trials whose run has its final status
        self.warned = False

    def _finish(self, trial: Any, errored: bool) -> None:
        progress = int((trial.last_result or {}).get(self.time_attr, 0))
        outcome = trial_outcome(errored, progress, self.max_t)
        if self.state_dir is not None:
            record_outcomes(self.state_dir, {trial.trial_id: outcome})
        try:
            self._set_status(trial, outcome, error_text(trial) if errored else None)
        except Exception as exc:
            self._warn_once(exc)
            return
        self.recorded.add(trial.trial_id)

    def _set_status(self, trial: Any, outcome: str, reason: str | None) -> None:
        client = client_for(self.tracking_uri)
        run_id = (find_child_run(client, self.experiment_id, self.parent_run_id, trial.trial_id)
                  or open_missing_run(client, self.experiment_id, self.parent_run_id,
                                      trial.trial_id))
        set_outcome(client, run_id, outcome, reason)

    def _warn_once(self, exc: Exception) -> None:
        if not self.warned:
            logger.warning("MLflow: trial statuses not recorded as trials end (%s); the sweep's "
                           "end records them", store_error_line(exc))
        self.warned = True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, errored=True)


def error_text(trial: Any) -> str:
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        return Path(error_file).read_text()
    return str(getattr(trial, "error_msg", None) or "trial failed")


def reconcile(client: MlflowClient, experiment_id: str, parent_run_id: str,
              outcomes: dict[str, tuple[str, str | None]]) -> dict[str, int]:
    """Make every child run's status agree with the final Tune outcome ({trial_id: (outcome,
    reason)}); returns counts per outcome. A run whose trial Tune never recorded is an orphan; a
    trial without a run (the store failed when it started) gets one."""
    counts: dict[str, int] = {}
    runs = child_runs(client, experiment_id, parent_run_id)
    for run in runs:
        trial_id = run.data.tags.get(TRIAL_TAG)
        outcome, reason = outcomes.get(trial_id, (None, None))
        if outcome is None:
            retire_orphan(client, run)
            continue
        if run.info.status != STATUS_FOR_OUTCOME[outcome] or \
                run.data.tags.get(OUTCOME_TAG) != outcome:
            set_outcome(client, run.info.run_id, outcome, reason)
        counts[outcome] = counts.get(outcome, 0) + 1
    for trial_id in sorted(outcomes.keys() - {run.data.tags.get(TRIAL_TAG) for run in runs}):
        outcome, reason = outcomes[trial_id]
        set_outcome(client, open_missing_run(client, experiment_id, parent_run_id, trial_id),
                    outcome, reason)
        counts[outcome] = counts.get(outcome, 0) + 1
    # Every outcome, zeros too, so the runs table can show and sort these columns for any sweep.
    for outcome in OUTCOMES:
        client.log_metric(parent_run_id, COUNT_METRIC.format(outcome), counts.get(outcome, 0))
    return counts


def retire_orphan(client: MlflowClient, run: Any) -> None:
    """A run started by a driver killed before Tune saved the trial: Tune proposed another trial
    in its place on resume, so the run stands for no trial of the sweep. It is ended and deleted
    (MLflow keeps deleted runs restorable), so the runs table holds one run per trial."""
    client.set_tag(run.info.run_id, ORPHAN_TAG, "started by a driver killed before Ray Tune "
                   "recorded this trial; the resumed sweep ran another trial in its place")
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, "FAILED")
    client.delete_run(run.info.run_id)


def describe_run(client: MlflowClient, run_id: str, text: str) -> None:
    """Markdown shown as the run's description on its MLflow page."""
    client.set_tag(run_id, NOTE_TAG, text)
