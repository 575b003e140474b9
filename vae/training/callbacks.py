"""Lightning callbacks of the library: audio examples to MLflow at each validation; the final
step validated and saved."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import soundfile as sf

from vae.training.mlflow import mlflow_logger


class AudioExamplesToMLflow(pl.Callback):
    """Writes original and reconstruction of the first validation clips as wav artifacts under
    ``audio/step_NNNNNNN/`` of the run, so reconstructions can be heard in the MLflow UI."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = mlflow_logger(trainer)
        examples = getattr(pl_module, "validation_examples", None)
        if trainer.sanity_checking or logger is None or examples is None or not trainer.is_global_zero:
            return
        originals, reconstructions = examples
        sample_rate = pl_module.config.model.sample_rate
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for i, (original, reconstruction) in enumerate(zip(originals, reconstructions)):
                sf.write(folder / f"{i:02d}_original.wav", original.T.numpy(), sample_rate)
                sf.write(folder / f"{i:02d}_reconstruction.wav",
                         reconstruction.clamp(-1, 1).T.numpy(), sample_rate)
            logger.experiment.log_artifacts(logger.run_id, str(folder),
                                            artifact_path=f"audio/step_{trainer.global_step:07d}")


class ValidateFinalStep(pl.Callback):
    """The run's last optimiser step, which ``trainer.val_every_steps`` need not divide, is
    validated inside fit, so the best checkpoint, a sweep's report and the loggers all see the
    final weights; with ``last_checkpoint``, that step's state is also saved there to resume from
    (the every-N-steps checkpoint callback misses it)."""

    def __init__(self, val_every_steps: int, last_checkpoint: Path | None = None) -> None:
        self.val_every_steps, self.last_checkpoint = val_every_steps, last_checkpoint

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # global_step counts optimiser steps: under accumulation it reaches max_steps on the
        # window's last batch, the one that ends fit.
        if trainer.max_steps < 0 or trainer.global_step < trainer.max_steps:
            return
        trainer.should_stop = True  # Lightning validates when a stop is asked for
        if self.last_checkpoint is not None and trainer.global_step % self.val_every_steps != 0:
            trainer.save_checkpoint(self.last_checkpoint)  # every process: it is collective
