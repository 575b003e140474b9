"""Training: the LightningModule (module.py), warmup schedules, callbacks, MLflow logging
(mlflow.py) and the one training function ``vae.training.train.train`` that both ``vae-train`` and
a sweep trial call."""
