"""Lightning callbacks of the library: audio examples to MLflow at each validation."""

from __future__ import annotations

import tempfile
from pathlib import Path

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
