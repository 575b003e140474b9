"""One training run: the function ``vae-train`` (vae/cli/train.py) and every sweep trial call."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import Strategy
from pytorch_lightning.utilities import rank_zero_only

from vae.config import ConfigError, VAEConfig
from vae.data.datamodule import build_datamodule
from vae.metric_table import METRICS
from vae.training.callbacks import AudioExamplesToMLflow, ValidateFinalStep
from vae.training.distributed import GradientAveragingStrategy
from vae.training.host_memory import retain_freed_memory
from vae.training.mlflow import build_mlflow_logger
from vae.training.module import AudioVAEModule

CHECKPOINT_METRIC = METRICS["mel_distance"]  # which checkpoint is "best" for a plain run
LAST_CHECKPOINT = "last"  # <run>/checkpoints/last.ckpt: the state at the latest validation
# Lightning announces the hardware and product tips (litlogger, litmodels) at INFO through these
# loggers for every Trainer: a sweep prints them once per trial.
LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


def quiet_lightning() -> None:
    """Keep Lightning's warnings, drop its per-Trainer announcements."""
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning <= 2.6's CombinedLoader builds torch's deprecated LeafSpec on every fit; no
    # argument avoids it, so only this message from that module is ignored.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
    # Each data-parallel process validates the whole split (vae/data/datamodule.py), so its
    # epoch metrics are already every process's: the advice to sync them does not apply.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(val/|step)",
                            module=r"pytorch_lightning\.trainer\.connectors\.logger_connector")
    # last.ckpt is meant to hold the weights after step N's update, what resuming at step N
    # needs; Lightning >= 2.6 warns on every run that a manually optimised module's does.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization",
                            module=r"pytorch_lightning\.callbacks\.model_checkpoint")
    # Lightning looks for the position in the loader; the data module keeps it (its state_dict).
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch",
                            module=r"pytorch_lightning\.loops\.training_epoch_loop")


def resolve_accelerator(config: VAEConfig) -> tuple[str, str]:
    """(accelerator, precision) for Lightning from the config's ``auto`` choices."""
    accelerator = config.trainer.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    precision = config.trainer.precision
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32"
    return accelerator, precision


@dataclass
class TrainResult:
    metrics: dict[str, float]
    best_checkpoint: str | None
    last_checkpoint: str | None
    mlflow_run_id: str | None
    global_step: int
    global_rank: int = 0  # of this process; only rank 0 writes files and logs to MLflow
    extra: dict[str, Any] = field(default_factory=dict)


def check_devices(config: VAEConfig, accelerator: str) -> None:
    """ConfigError when ``trainer.devices`` asks for more than this machine has: GPUs, or on
    CPU the cores this process may use (each process needs at least one)."""
    devices = config.trainer.devices
    if accelerator == "gpu":
        available, what = torch.cuda.device_count(), "GPUs"
    else:
        available, what = len(os.sched_getaffinity(0)), "CPU cores"
    if devices > available:
        raise ConfigError(f"trainer.devices: {devices} processes asked, this machine has "
                          f"{available} {what} (trainer.accelerator={accelerator})")


def last_checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"{LAST_CHECKPOINT}.ckpt"


def build_trainer(config: VAEConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = (),
                  loggers: Sequence[Any] = (), checkpointing: bool = True,
                  strategy: Strategy | None = None) -> pl.Trainer:
    """``checkpointing=False`` when the caller saves checkpoints itself (a sweep trial).
    ``strategy``: the caller's data-parallel strategy (a Ray Train worker's); by default one
    process, or GradientAveragingStrategy when trainer.devices x num_nodes > 1."""
    accelerator, precision = resolve_accelerator(config)
    trainer_cfg = config.trainer
    if strategy is None and trainer_cfg.devices * trainer_cfg.num_nodes > 1:
        strategy = GradientAveragingStrategy()
    # Lightning counts validation and logging intervals in batches; a step is k batches.
    batches_per_step = trainer_cfg.accumulate_grad_batches
    all_callbacks: list[pl.Callback] = list(callbacks)
    if checkpointing:
        checkpoints = last_checkpoint_path(run_dir).parent
        all_callbacks[:0] = [
            ModelCheckpoint(dirpath=checkpoints, filename="step{step:07d}",
                            auto_insert_metric_name=False, monitor=CHECKPOINT_METRIC.key,
                            mode=CHECKPOINT_METRIC.direction, save_top_k=1),
            # last.ckpt, the state to resume from, at every validation step. Lightning >= 2.6's
            # save_last only rewrites it when the monitored metric improved.
            ModelCheckpoint(dirpath=checkpoints, filename=LAST_CHECKPOINT, monitor=None,
                            save_top_k=1, every_n_train_steps=trainer_cfg.val_every_steps,
                            enable_version_counter=False)]
    if loggers and config.tracking.audio_examples > 0:
        all_callbacks.append(AudioExamplesToMLflow())
    return pl.Trainer(
        accelerator=accelerator, precision=precision, strategy=strategy or "auto",
        devices=trainer_cfg.devices, num_nodes=trainer_cfg.num_nodes,
        # The training sampler shards itself (EpochKeySampler.shard); each process validates
        # the whole split, so validation metrics are the one-process figures on every rank.
        use_distributed_sampler=False,
        max_steps=trainer_cfg.max_steps, max_epochs=-1,
        # Validate every N generator steps across epoch boundaries.
        val_check_interval=trainer_cfg.val_every_steps * batches_per_step,
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
        log_every_n_steps=trainer_cfg.log_every_steps * batches_per_step,
        logger=list(loggers) or False, callbacks=all_callbacks,
        enable_progress_bar=trainer_cfg.progress_bar, enable_model_summary=False,
        enable_checkpointing=checkpointing,
        deterministic=trainer_cfg.deterministic, default_root_dir=str(run_dir),
    )


def check_resume_checkpoint(ckpt_path: str | Path) -> Path:
    """``ckpt_path`` as a local checkpoint file that loads without running code, else ConfigError.
    Lightning loads http(s)/s3 checkpoints with ``weights_only=False`` (full unpickling: a crafted
    file runs code), so only a local file the user named is accepted, and it must pass a
    ``weights_only`` load before Lightning sees it."""
    text = str(ckpt_path)
    if "://" in text:
        raise ConfigError(f"ckpt_path: {text} is a URL; only a local checkpoint file is loaded "
                          "(download it yourself if you trust its source)")
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"ckpt_path: {text}: no such checkpoint file")
    try:  # mmap: checks the pickle without reading every tensor
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).split("\n", 1)[0]
        raise ConfigError(f"ckpt_path: {text}: not a checkpoint written by vae-train, or one that "
                          f"would run code when loaded ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path: {text}: not a Lightning checkpoint (no state_dict)")
    return path


def train(config: VAEConfig, *, ckpt_path: str | None = None, callbacks: Sequence[pl.Callback] = (),
          mlflow_run_id: str | None = None, run_dir: str | Path | None = None,
          owns_run_status: bool = True, checkpointing: bool = True,
          strategy: Strategy | None = None) -> TrainResult:
    """Train one VAE. ``ckpt_path`` resumes (weights, optimisers, schedules, step counter).
    ``mlflow_run_id`` logs into an existing run; with ``owns_run_status=False`` the caller sets
    that run's final status. With several processes (trainer.devices / num_nodes, or a caller's
    ``strategy``) every process calls this; rank 0 alone logs and writes the run folder."""
    check_devices(config, resolve_accelerator(config)[0])
    if ckpt_path is not None:
        ckpt_path = str(check_resume_checkpoint(ckpt_path))
    quiet_lightning()
    if config.trainer.retain_freed_memory:
        retain_freed_memory()
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    # Lightning's launcher sets each process's rank before this runs (a caller's strategy: the
    # caller sets rank_zero_only.rank).
    rank = rank_zero_only.rank
    logger = build_mlflow_logger(config, mlflow_run_id, owns_run_status) if rank == 0 else None
    if run_dir is None:
        name = logger.run_id if logger is not None else "run"
        run_dir = Path(config.trainer.out_dir) / name
    run_dir = Path(run_dir).resolve()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
    if logger is not None:
        logger.log_hyperparams(config.flat())

    module = AudioVAEModule(config)
    datamodule = build_datamodule(config)
    last_path = last_checkpoint_path(run_dir) if checkpointing else None
    final_step = ValidateFinalStep(config.trainer.val_every_steps, last_path)
    trainer = build_trainer(config, run_dir, [*callbacks, final_step],
                            [logger] if logger else [], checkpointing, strategy)
    # weights_only: Lightning's own load of the checkpoint never unpickles arbitrary objects
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    best = trainer.checkpoint_callbacks[0] if checkpointing else None
    last = str(last_path) if last_path is not None and last_path.is_file() else None
    if logger is not None and config.tracking.log_checkpoint and last:
        logger.experiment.log_artifact(logger.run_id, last, artifact_path="checkpoints")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return TrainResult(metrics=metrics, best_checkpoint=best.best_model_path or None if best else None,
                       last_checkpoint=last or None, global_step=trainer.global_step,
                       mlflow_run_id=logger.run_id if logger is not None else None,
                       global_rank=trainer.global_rank)
