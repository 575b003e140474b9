"""A trial on several data-parallel workers (``resources: {workers: N}``): the Tune trial runs a
Ray Train ``TorchTrainer`` whose N workers train one model together (Lightning with
vae's GradientAveragingStrategy over the process group Ray Train set up).

What a one-process trial does stays the same: the trial's MLflow child run is opened by the Tune
trial; worker 0 logs into it; after each validation every worker reports to Ray Train (worker 0
with the Lightning checkpoint), and a Train callback hands worker 0's report and the stored
checkpoint back to the Tune trial, which reports them to Tune as a one-process trial would. So
ASHA, Optuna, the kept checkpoint and resuming work unchanged. ``ray.train.report`` is the call
inside Train workers; the Tune trial itself only calls ``ray.tune.*``."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import traceback
from pathlib import Path
from queue import Empty
from typing import Any

import ray
import torch
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue

from sweeps.layout import trial_dirname
from sweeps.execution.trial import (RAY_CHECKPOINT_LOGGERS, TrialContext, TuneReportCallback,
                                    prepare_trial, restored_checkpoint, resumed_step)
from vae.config import VAEConfig
from vae.training.distributed import GradientAveragingStrategy
from vae.training.train import train

TRAIN_RUNS = "train"  # in the trial's folder: each attempt's Ray Train run (its checkpoints)
POLL_S = 0.5
TRAIN_REPORT_LOGGER = "ray.train.v2._internal.execution.context"
WORKER_NODE = "worker_node"  # in each worker's report: its Ray node; in the trial's: all of them
WORKER_NODES_TAG = "ray.worker_node_ids"  # on the trial's MLflow run: worker i's node, i = 0..N-1


class RayWorkerStrategy(RayDDPStrategy, GradientAveragingStrategy):
    """Ray's device and sampler placement (RayDDPStrategy) with vae's own gradient averaging
    (GradientAveragingStrategy's configure_ddp): one process of a world Ray Train set up."""


class ReportsToTrial(UserCallback):
    """On the Train controller: worker 0's report and the stored checkpoint, to the Tune trial."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        nodes = ",".join(worker.get(WORKER_NODE, "?") for worker in metrics)
        self.queue.put(({**metrics[0], WORKER_NODE: nodes}, checkpoint))


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the same ``vae.training.train.train`` a one-process trial runs."""
    from pytorch_lightning.utilities import rank_zero_only

    context: TrialContext = loop_config["context"]
    for name in (*RAY_CHECKPOINT_LOGGERS, TRAIN_REPORT_LOGGER):  # a line per report otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    rank = ray.train.get_context().get_world_rank()
    rank_zero_only.rank = rank  # before train(): only rank 0 opens the logger and writes
    torch.set_num_threads(max(1, int(context.cpus_per_trial)))
    config = VAEConfig.model_validate(loop_config["config"])
    run_id = loop_config["run_id"] if rank == 0 else None
    if rank != 0:
        config = config.override({"tracking.enabled": False})

    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], checkpoint: Any) -> None:
        ray.train.report({**metrics, WORKER_NODE: node},
                         checkpoint=checkpoint if rank == 0 else None)

    client = None
    if rank == 0 and run_id is not None:
        from sweeps.execution.tracking import client_for
        from vae.training.mlflow import GuardedClient, TrackingGuard

        client = GuardedClient(client_for(context.tracking_uri), TrackingGuard(f"worker {rank}"))
    with tempfile.TemporaryDirectory(prefix=f"vae-worker{rank}-") as scratch:
        ckpt_path, running_best = restored_checkpoint(loop_config["checkpoint"], Path(scratch))
        callback = TuneReportCallback(context, client, run_id, running_best, report=report)
        train(config, ckpt_path=str(ckpt_path) if ckpt_path else None, callbacks=[callback],
              mlflow_run_id=run_id, run_dir=Path(scratch) / "run", owns_run_status=False,
              checkpointing=False,
              strategy=RayWorkerStrategy(cluster_environment=RayLightningEnvironment()))


def run_workers_trial(sampled: dict[str, Any], context: TrialContext) -> None:
    """The Tune trial of a multi-worker space: prepare, run the TorchTrainer, relay its reports."""
    use_gpu = context.gpus_per_worker > 0
    trial = prepare_trial(sampled, context, "gpu" if use_gpu else "cpu")
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with tempfile.TemporaryDirectory() as scratch:
            ckpt_path, _ = restored_checkpoint(checkpoint, Path(scratch))
            trial.client.set_tag(trial.run_id, "resumed_from_step", resumed_step(ckpt_path))
    queue = Queue(actor_options={"num_cpus": 0})
    # In the trial's folder of the sweep's storage, which every node reaches (NFS or s3://).
    train_storage = f"{context.experiment_dir}/{trial_dirname(trial.trial_id)}"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"context": context, "config": trial.config.to_dict(),
                           "run_id": trial.run_id, "checkpoint": checkpoint},
        scaling_config=ScalingConfig(
            num_workers=context.workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": context.cpus_per_trial,
                                  **({"GPU": context.gpus_per_worker} if use_gpu else {})}),
        run_config=RunConfig(
            # A fresh Train run per attempt: Tune's checkpoint is the one a trial resumes from.
            name=f"{TRAIN_RUNS}_{time.time_ns()}", storage_path=train_storage,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=0),  # Tune retries the trial
            callbacks=[ReportsToTrial(queue)]))
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name=f"torchtrainer-{trial.trial_id}", daemon=True)
    thread.start()
    nodes_tagged = None
    while True:
        try:
            metrics, stored = queue.get(timeout=POLL_S)
        except Empty:
            if thread.is_alive():
                continue
            break
        if metrics[WORKER_NODE] != nodes_tagged:  # where the workers run, once per placement
            nodes_tagged = metrics[WORKER_NODE]
            trial.client.set_tag(trial.run_id, WORKER_NODES_TAG, nodes_tagged)
        tune.report(metrics, checkpoint=tune.Checkpoint(stored.path, stored.filesystem))
    if "error" in outcome:
        reason = "".join(traceback.format_exception(outcome["error"]))
        trial.client.set_tag(trial.run_id, "failure_reason", reason[-4900:])
        raise outcome["error"]
