"""The Ray Tune function of one trial: sampled values → VAE config → the same
``vae.training.train.train`` that ``vae-train`` runs, reporting metrics and a checkpoint after
every validation. Its MLflow run carries, besides the training curves, the objective and the
trial's best report so far under best/ (the values it is ranked, kept and exported by) and a tag
saying what the objective is."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import ray
import torch
from mlflow.entities import Metric
from ray import tune

from sweeps.layout import (BEST_OBJECTIVE, BEST_STEP, CHECKPOINT_FILE, OBJECTIVE,
                           RUNNING_BEST_FILE, improves)
from sweeps.objectives import (BEST_VALIDATION, Constraint, Goal, ranked_value, ranking_words,
                               total_violation)
from sweeps.results.records import read_running_best
from sweeps.space.schema import decode_sampled
from sweeps.execution.tracking import client_for, open_child_run
from vae.config import VAEConfig
from vae.metric_table import METRIC_BY_KEY, METRICS, VALIDATION_PREFIX, best_metric
from vae.training.mlflow import (BEST_OBJECTIVE_METRIC, BEST_STEP_METRIC, OBJECTIVE_FORMULA_TAG,
                                 OBJECTIVE_METRIC, GuardedClient, TrackingGuard,
                                 quiet_store_errors)
from vae.training.train import train

NODE_TAG = "ray.node_id"
# Ray logs "Checkpoint successfully created at ..." at INFO for every report of every trial.
RAY_CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
BEST_REPORT = "best_report"  # in running_best.json: the best report under the run's best/ names


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the driver (picklable; passed with tune.with_parameters)."""

    sweep_name: str
    base_config: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    objective_metric: str
    mode: str = "min"
    max_kbps: float | None = None
    penalty_per_kbps: float = 1.0
    cpus_per_trial: float = 1.0
    json_params: tuple[str, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    workers: int = 1  # data-parallel processes per trial: >1 runs a Ray Train TorchTrainer
    gpus_per_worker: float = 0.0
    experiment_dir: str = ""  # the sweep's folder in its storage (SweepPaths.experiment_dir)


def objective_value(metrics: dict[str, float], context: TrialContext) -> float:
    """The scalar ASHA ranks by: the objective metric, plus a penalty per kbps above the rate
    budget when there is one (distortion at a rate budget); a report outside the constraints
    ranks behind every report inside them (sweeps.objectives.ranked_value)."""
    value = metrics[context.objective_metric]
    if context.max_kbps is not None:
        excess = metrics[METRICS["kl_kbps"].key] - context.max_kbps
        value += context.penalty_per_kbps * max(0.0, excess)
    return ranked_value(value, context.mode, total_violation(context.constraints, metrics))


def rate_penalty_words(max_kbps: float | None, penalty_per_kbps: float) -> str:
    """objective_value's rate penalty in words, ``+ 0.5 per kbps of val/kl_kbps over 6`` ("" without
    a rate budget): the one wording of the live view, the summary and the runs' formula tag."""
    if max_kbps is None:
        return ""
    return f"+ {penalty_per_kbps:g} per kbps of {METRICS['kl_kbps'].key} over {max_kbps:g}"


def objective_formula(context: TrialContext) -> str:
    """What the objective is: its metric, with the rate penalty or the constraints if any."""
    penalty = rate_penalty_words(context.max_kbps, context.penalty_per_kbps)
    ranking = ranking_words(Goal(context.objective_metric, context.mode), context.constraints)
    return f"{ranking} {penalty}".strip()


def best_report(metrics: dict[str, float], step: int) -> dict[str, float]:
    """A report as a trial's best, under the run's best/ names: its objective, its step and every
    metric of the metric table it has."""
    return {BEST_OBJECTIVE_METRIC: metrics[OBJECTIVE], BEST_STEP_METRIC: float(step),
            **{best_metric(key): metrics[key] for key in METRIC_BY_KEY if key in metrics}}


class TuneReportCallback(pl.Callback):
    """After each validation: ``tune.report`` of the fixed metrics, the objective, the trial's
    best objective so far and its step, with a checkpoint the trial resumes from after a restart
    (the running best travels inside it, so a resumed trial keeps its best); and on the trial's
    run the objective and the best report so far (see log_to_run)."""

    def __init__(self, context: TrialContext, client: Any = None, run_id: str | None = None,
                 running_best: dict[str, Any] | None = None,
                 report: Callable[..., None] = tune.report) -> None:
        """``report(metrics, checkpoint=...)``: tune.report in a one-process trial; a Ray Train
        worker's report in a trial of several workers (sweeps/execution/trial_workers.py)."""
        self.context, self.client, self.run_id, self.report = context, client, run_id, report
        self.first_step_at: float | None = None
        restored = running_best or {}
        self.best: float | None = restored.get(BEST_OBJECTIVE)
        self.best_step: int | None = restored.get(BEST_STEP)
        self.best_report: dict[str, float] = restored.get(BEST_REPORT, {})

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.first_step_at is None:  # wall clock, for start-latency benchmarks
            self.first_step_at = time.time()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                   if k.startswith(VALIDATION_PREFIX)}
        if not metrics:
            return
        step = trainer.global_step
        metrics["step"] = step
        metrics["first_step_at"] = self.first_step_at or 0.0
        objective = objective_value(metrics, self.context)
        # A NaN objective would poison the searcher: report the worst value for the mode instead.
        worst = float("inf") if self.context.mode == "min" else float("-inf")
        metrics[OBJECTIVE] = objective if math.isfinite(objective) else worst
        if self.best is None or improves(metrics[OBJECTIVE], self.best, self.context.mode):
            self.best, self.best_step = metrics[OBJECTIVE], step
            self.best_report = best_report(metrics, step)
        metrics[BEST_OBJECTIVE], metrics[BEST_STEP] = self.best, self.best_step
        # The best report's metrics travel with every report (best/val/...): a multi-objective
        # searcher tells Optuna every objective at the trial's best report.
        metrics.update({key: value for key, value in self.best_report.items()
                        if key.startswith(BEST_VALIDATION)})
        self.log_to_run(metrics[OBJECTIVE], step)
        if self.run_id:
            metrics["mlflow_run_id"] = self.run_id  # the searcher tags its Optuna trial with it
        running_best = {"step": step, OBJECTIVE: metrics[OBJECTIVE], BEST_OBJECTIVE: self.best,
                        BEST_STEP: self.best_step, BEST_REPORT: self.best_report}
        with tempfile.TemporaryDirectory() as folder:
            # Full state (optimisers, loops): the trial resumes from it. Said explicitly, as
            # Lightning logs its default on every save otherwise.
            trainer.save_checkpoint(Path(folder) / CHECKPOINT_FILE, weights_only=False)
            (Path(folder) / RUNNING_BEST_FILE).write_text(json.dumps(running_best))
            self.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def log_to_run(self, objective: float, step: int) -> None:
        """This validation's objective and the best report so far, all at this step, so each
        best/ metric's latest value is the best report's whatever happened before (an attempt
        lost on a restart included). Before the report: ASHA may stop the trial at it."""
        if self.client is None:
            return
        values = {OBJECTIVE_METRIC: objective, BEST_OBJECTIVE_METRIC: self.best, **self.best_report}
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, value, now, step) for key, value in values.items()
            if value is not None and math.isfinite(value)])


@dataclass
class PreparedTrial:
    """A trial's config and its MLflow child run, ready for training."""

    trial_id: str
    config: VAEConfig
    run_id: str | None
    client: Any  # GuardedClient: MLflow calls that never fail the training
    guard: TrackingGuard


def prepare_trial(sampled: dict[str, Any], context: TrialContext, accelerator: str) -> PreparedTrial:
    """Sampled values → the trial's config, and its MLflow child run opened and tagged."""
    sampled = decode_sampled(sampled, context.json_params)
    for name in RAY_CHECKPOINT_LOGGERS:  # in this worker process, where Ray logs them
        logging.getLogger(name).setLevel(logging.WARNING)
    tune_context = tune.get_context()
    trial_id, trial_name = tune_context.get_trial_id(), tune_context.get_trial_name()
    config = VAEConfig.model_validate(context.base_config).override({
        **sampled,
        "trainer.accelerator": accelerator,
        "trainer.progress_bar": False,
        "tracking.tracking_uri": context.tracking_uri,
        "tracking.run_name": trial_name,
    })

    # MLflow must not fail the training: the first failure is one warning and tracking stops for
    # this trial; the driver sets the run's status (it creates the run if this one could not).
    quiet_store_errors()
    guard = TrackingGuard(f"trial {trial_id}")
    store = client_for(context.tracking_uri)
    run_id = guard.call(open_child_run, store, context.experiment_id, context.parent_run_id,
                        trial_id, trial_name, context.sweep_name)
    if run_id is None:
        config = config.override({"tracking.enabled": False})  # else train() opens a run itself
    client = GuardedClient(store, guard)
    # The node this attempt runs on (a retried trial may move: the tag holds the latest).
    client.set_tag(run_id, NODE_TAG, ray.get_runtime_context().get_node_id())
    client.set_tag(run_id, OBJECTIVE_FORMULA_TAG, objective_formula(context))
    for name, value in sampled.items():
        client.log_param(run_id, f"searched/{name}", value)
    return PreparedTrial(trial_id, config, run_id, client, guard)


def restored_checkpoint(checkpoint: Any, scratch: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The Lightning checkpoint file (copied into ``scratch``) and the running best of a Tune
    checkpoint; (None, None) without one."""
    if checkpoint is None:
        return None, None
    ckpt_path = scratch / CHECKPOINT_FILE
    with checkpoint.as_directory() as folder:
        shutil.copy(Path(folder) / CHECKPOINT_FILE, ckpt_path)
        running_best = read_running_best(Path(folder))
    return ckpt_path, running_best


def resumed_step(ckpt_path: Path) -> str:
    return str(torch.load(ckpt_path, map_location="cpu", weights_only=True)["global_step"])


def run_trial(sampled: dict[str, Any], context: TrialContext) -> None:
    """The Tune trainable (wrap with ``tune.with_parameters(run_trial, context=...)``)."""
    # Ray shows a trial every GPU unless told otherwise; trust only the ones it assigned, and
    # only if this process can use CUDA (a node may declare GPUs its torch cannot drive).
    accelerator = "gpu" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, int(context.cpus_per_trial)))
    trial = prepare_trial(sampled, context, accelerator)
    # Node-local scratch: Tune copies the trial dir to the sweep storage, and Lightning's own
    # files do not belong there (Tune's checkpoints are what a trial resumes from).
    with tempfile.TemporaryDirectory(prefix=f"vae-trial-{trial.trial_id}-") as scratch:
        ckpt_path, running_best = restored_checkpoint(tune.get_checkpoint(), Path(scratch))
        if ckpt_path is not None:
            trial.client.set_tag(trial.run_id, "resumed_from_step", resumed_step(ckpt_path))
        report = TuneReportCallback(context, trial.client, trial.run_id, running_best)
        try:
            with trial.guard.active():
                train(trial.config, ckpt_path=str(ckpt_path) if ckpt_path else None,
                      callbacks=[report], mlflow_run_id=trial.run_id,
                      run_dir=Path(scratch) / "run", owns_run_status=False, checkpointing=False)
        except Exception:
            trial.client.set_tag(trial.run_id, "failure_reason", traceback.format_exc()[-4900:])
            raise
