"""One training run: the function ``vae-train`` (vae/cli/train.py) and every sweep trial call."""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from vae.config import ConfigError, VAEConfig
from vae.data.datamodule import build_datamodule
from vae.metric_table import METRICS
from vae.training.callbacks import AudioExamplesToMLflow
from vae.training.host_memory import retain_freed_memory
from vae.training.mlflow import build_mlflow_logger
from vae.training.module import AudioVAEModule

CHECKPOINT_METRIC = METRICS["mel_distance"]  # which checkpoint is "best" for a plain run
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
    extra: dict[str, Any] = field(default_factory=dict)


def build_trainer(config: VAEConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = (),
                  loggers: Sequence[Any] = (), checkpointing: bool = True) -> pl.Trainer:
    """``checkpointing=False`` when the caller saves checkpoints itself (a sweep trial)."""
    accelerator, precision = resolve_accelerator(config)
    trainer_cfg = config.trainer
    all_callbacks: list[pl.Callback] = list(callbacks)
    if checkpointing:
        all_callbacks.insert(0, ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
            monitor=CHECKPOINT_METRIC.key, mode=CHECKPOINT_METRIC.direction, save_top_k=1,
            save_last=True))
    if loggers and config.tracking.audio_examples > 0:
        all_callbacks.append(AudioExamplesToMLflow())
    return pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision,
        max_steps=trainer_cfg.max_steps, max_epochs=-1,
        # Validate every N generator steps across epoch boundaries.
        val_check_interval=trainer_cfg.val_every_steps, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, log_every_n_steps=trainer_cfg.log_every_steps,
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
          owns_run_status: bool = True, checkpointing: bool = True) -> TrainResult:
    """Train one VAE. ``ckpt_path`` resumes (weights, optimisers, schedules, step counter).
    ``mlflow_run_id`` logs into an existing run; with ``owns_run_status=False`` the caller sets
    that run's final status."""
    if ckpt_path is not None:
        ckpt_path = str(check_resume_checkpoint(ckpt_path))
    quiet_lightning()
    if config.trainer.retain_freed_memory:
        retain_freed_memory()
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    logger = build_mlflow_logger(config, mlflow_run_id, owns_run_status)
    if run_dir is None:
        name = logger.run_id if logger is not None else "run"
        run_dir = Path(config.trainer.out_dir) / name
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if logger is not None:
        logger.log_hyperparams(config.flat())
    (run_dir / "config.yaml").write_text(config.to_yaml())

    module = AudioVAEModule(config)
    datamodule = build_datamodule(config)
    trainer = build_trainer(config, run_dir, callbacks, [logger] if logger else [], checkpointing)
    # weights_only: Lightning's own load of the checkpoint never unpickles arbitrary objects
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.global_step % config.trainer.val_every_steps != 0:
        # The last steps were never validated: do it, so final metrics describe final weights.
        trainer.validate(module, datamodule=datamodule, verbose=False)

    checkpoint = trainer.checkpoint_callback
    last = checkpoint.last_model_path if checkpoint else None
    if logger is not None and config.tracking.log_checkpoint and last:
        logger.experiment.log_artifact(logger.run_id, last, artifact_path="checkpoints")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return TrainResult(metrics=metrics, best_checkpoint=checkpoint.best_model_path or None if checkpoint else None,
                       last_checkpoint=last or None, global_step=trainer.global_step,
                       mlflow_run_id=logger.run_id if logger is not None else None)
