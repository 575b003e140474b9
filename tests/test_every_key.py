"""Every config key does something: each leaf is read by the code that uses its section, and the
keys not covered by the loss, model, data and training tests are exercised here."""

import re
from pathlib import Path

import pytest
import torch

from vae.config import VAEConfig
from vae.training.module import AudioVAEModule
from vae.training.mlflow import build_mlflow_logger, resolve_tracking_uri
from vae.training.train import resolve_accelerator

VAE = Path(__file__).resolve().parents[1] / "vae"
SOURCES = "\n".join(p.read_text() for p in VAE.rglob("*.py") if p.name != "config.py")


@pytest.mark.parametrize("path", sorted(VAEConfig().flat()))
def test_each_key_is_read_somewhere_outside_the_schema(path):
    leaf = path.rsplit(".", 1)[-1]
    assert re.search(rf"\.{leaf}\b", SOURCES), f"nothing reads {path}"


def lr_curve(**optim) -> list[float]:
    config = VAEConfig().override({"trainer.max_steps": 100, **{f"optim.{k}": v for k, v in optim.items()}})
    setup = AudioVAEModule(config).configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_learning_rate_schedules():
    constant = lr_curve(scheduler="constant", lr=1e-3)
    assert constant == [pytest.approx(1e-3)] * 100
    warm = lr_curve(scheduler="constant", lr=1e-3, warmup_steps=10)
    assert warm[0] == pytest.approx(1e-4) and warm[9] == pytest.approx(1e-3) and warm[50] == pytest.approx(1e-3)
    cosine = lr_curve(scheduler="cosine", lr=1e-3, min_lr_ratio=0.2)
    assert cosine[0] == pytest.approx(1e-3) and cosine[-1] == pytest.approx(2e-4, rel=0.01)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    exponential = lr_curve(scheduler="exponential", lr=1e-3, gamma=0.9)
    assert exponential[10] == pytest.approx(1e-3 * 0.9 ** 10)


def test_optimiser_keys_reach_adamw():
    config = VAEConfig().override({"optim.betas": [0.5, 0.9], "optim.weight_decay": 0.25, "optim.lr": 2e-3})
    group = AudioVAEModule(config).configure_optimizers()["optimizer"].param_groups[0]
    assert group["betas"] == (0.5, 0.9) and group["weight_decay"] == 0.25 and group["initial_lr"] == 2e-3


def test_trainer_and_tracking_keys(tmp_path, monkeypatch):
    assert resolve_accelerator(VAEConfig().override({"trainer.accelerator": "cpu"})) == ("cpu", "32")
    if not torch.cuda.is_available():
        assert resolve_accelerator(VAEConfig()) == ("cpu", "32")
    assert resolve_accelerator(VAEConfig().override({"trainer.precision": "bf16-mixed",
                                                     "trainer.accelerator": "cpu"}))[1] == "bf16-mixed"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'other.db'}"
    assert resolve_tracking_uri("http://host:5000") == "http://host:5000"
    assert build_mlflow_logger(VAEConfig().override({"tracking.enabled": False})) is None
    logger = build_mlflow_logger(VAEConfig().override({"tracking.experiment": "exp-x",
                                                        "tracking.run_name": "run-y"}))
    assert logger._experiment_name == "exp-x" and logger._run_name == "run-y"
