"""Past one batch and one process: gradient accumulation gives the update of the larger batch,
and ``vae-train trainer.devices=2`` (gloo, two processes on this CPU) follows the one-process
curve from the same seed and global batch, and resumes from its checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import MICRO
from vae.config import VAEConfig
from vae.data.datamodule import EpochKeySampler, build_datamodule
from vae.training.module import AudioVAEModule
from vae.training.train import build_trainer

STEPS = 2


def fitted(tmp_path, batch_size: int, accumulate: int, **overrides
           ) -> tuple[AudioVAEModule, list[float]]:
    """The module after STEPS steps, and the gradient norm each optimiser stepped on, in order."""
    config = VAEConfig().override({
        **MICRO, "tracking.enabled": False, "data.batch_size": batch_size,
        "trainer.accumulate_grad_batches": accumulate, "trainer.max_steps": STEPS,
        "trainer.val_every_steps": STEPS, "optim.lr": 1e-2, "optim.scheduler": "constant",
        "trainer.gradient_clip": 0.0, **overrides})
    pl.seed_everything(0, verbose=False)
    module = AudioVAEModule(config)
    trainer = build_trainer(config, tmp_path / f"b{batch_size}k{accumulate}", checkpointing=False)
    norms: list[float] = []

    def record(optimizer, args, kwargs) -> None:  # every optimiser: generator and discriminators
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        trainer.fit(module, datamodule=build_datamodule(config))
    finally:
        handle.remove()
    assert trainer.global_step == STEPS
    return module, norms


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, before: torch.nn.Module) -> None:
    moved = 0.0
    for (name, x), y, start in zip(a.state_dict().items(), b.state_dict().values(),
                                   before.state_dict().values()):
        # Adam divides by the gradient's root mean square: float noise in a near-zero component
        # (a last bias, where a hinge's terms cancel) moved its weight by up to 1.7e-4 in two
        # steps (measured), against lr = 1e-2 for every other update.
        torch.testing.assert_close(x, y, rtol=1e-4, atol=5e-4, msg=name)
        if x.is_floating_point():
            moved += float((x - start).abs().sum())
    assert moved > 0  # the steps did change the weights


ADVERSARIAL = {"adversarial.enabled": True, "adversarial.discriminators": ["mpd"],
               "adversarial.mpd.periods": [2, 3], "adversarial.channels": 4,
               "adversarial.feature_matching_weight": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [{}, ADVERSARIAL], ids=["default", "adversarial"])
def test_accumulated_batches_give_the_update_of_the_larger_batch(tmp_path, recipe):
    config = VAEConfig().override({**MICRO, **recipe})
    pl.seed_everything(0, verbose=False)
    initial = AudioVAEModule(config)
    one_large, large_norms = fitted(tmp_path, batch_size=4, accumulate=1, **recipe)
    accumulated, accumulated_norms = fitted(tmp_path, batch_size=2, accumulate=2, **recipe)
    # the gradients each step was taken on: Adam would hide a wrong scale in the weights
    assert len(large_norms) == STEPS * (2 if recipe else 1)
    torch.testing.assert_close(torch.tensor(accumulated_norms), torch.tensor(large_norms),
                               rtol=1e-3, atol=0.0)
    assert_same_weights(one_large, accumulated, initial)
    if recipe:  # the discriminators accumulate too: their own optimiser took the same steps
        assert_same_weights(one_large.adversarial, accumulated.adversarial, initial.adversarial)


def test_accumulation_takes_one_step_per_window_and_validates_on_steps(tmp_path):
    config = VAEConfig().override({**MICRO, "tracking.enabled": False,
                                   "trainer.accumulate_grad_batches": 3, "trainer.max_steps": 4,
                                   "trainer.val_every_steps": 2})
    module = AudioVAEModule(config)
    steps_validated = []

    class Record(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            steps_validated.append(trainer.global_step)

    trainer = build_trainer(config, tmp_path, callbacks=[Record()], checkpointing=False)
    trainer.fit(module, datamodule=build_datamodule(config))
    assert trainer.global_step == 4 and steps_validated == [2, 4]
    assert trainer.fit_loop.total_batch_idx + 1 == 12  # 3 batches per step


def test_shards_of_the_sampler_make_the_one_process_batches():
    whole = list(EpochKeySampler(10, seed=3))
    shards = []
    for rank in range(2):
        sampler = EpochKeySampler(10, seed=3)
        sampler.shard(rank, 2)
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 5
    # batch i of 2 per process together = batch i of 4 in one process
    for i in range(2):
        assert sorted(shards[0][2 * i: 2 * i + 2] + shards[1][2 * i: 2 * i + 2]) == sorted(whole[4 * i: 4 * i + 4])


def vae_train(tmp_path, *args: str) -> subprocess.CompletedProcess:
    overrides = [f"{k}={v}".replace(" ", "") for k, v in MICRO.items() if k != "data.batch_size"]
    return subprocess.run([sys.executable, "-m", "vae.cli.train", *overrides,
                           "tracking.experiment=ddp", "trainer.val_every_steps=3",
                           "trainer.log_every_steps=1", "trainer.seed=5",
                           # constant: a run stopped early schedules the rate of a longer one
                           "optim.scheduler=constant", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def curve(tmp_path, experiment: str = "ddp") -> tuple[dict[str, list[float]], list]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    curves = {}
    for key in ("train/loss", "val/mel_distance"):
        history = sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)
        curves[key] = [m.value for m in history]
    return curves, runs


@pytest.mark.slow
def test_two_gloo_processes_follow_the_one_process_curve_and_resume(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = vae_train(one, "data.batch_size=4", "trainer.max_steps=6")
    assert single.returncode == 0, single.stderr[-3000:]
    double = vae_train(two, "data.batch_size=2", "trainer.devices=2", "trainer.accelerator=cpu",
                       "trainer.max_steps=6")
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("Final validation at step 6") == 1  # rank 0 alone reports
    (single_curve, _), (double_curve, runs) = curve(one), curve(two)
    assert len(runs) == 1  # one MLflow run, not one per process
    assert len(double_curve["train/loss"]) == 6 and len(double_curve["val/mel_distance"]) == 2
    # Same weights, same global batch; only the posterior noise differs between the two.
    for key in single_curve:
        torch.testing.assert_close(torch.tensor(double_curve[key]), torch.tensor(single_curve[key]),
                                   rtol=0.05, atol=0.0, msg=key)

    last = next((two / "runs").rglob("last.ckpt"))
    resumed = vae_train(two, "data.batch_size=2", "trainer.devices=2", "trainer.accelerator=cpu",
                        "trainer.max_steps=9", "tracking.experiment=resumed", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Final validation at step 9" in resumed.stdout
    resumed_curve, resumed_runs = curve(two, "resumed")
    assert len(resumed_curve["train/loss"]) == 3  # steps 7..9 only: it went on from step 6

    # Each process's data and posterior noise go on as in a run never stopped: the same weights.
    whole_dir = tmp_path / "whole"
    whole_dir.mkdir()
    whole = vae_train(whole_dir, "data.batch_size=2", "trainer.devices=2", "trainer.accelerator=cpu",
                      "trainer.max_steps=9")
    assert whole.returncode == 0, whole.stderr[-3000:]
    whole_curve, whole_runs = curve(whole_dir)
    assert resumed_curve["train/loss"] == whole_curve["train/loss"][6:]

    def weights(folder, run) -> dict[str, torch.Tensor]:
        path = folder / "runs" / run.info.run_id / "checkpoints" / "last.ckpt"
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    resumed_weights, whole_weights = weights(two, resumed_runs[0]), weights(whole_dir, whole_runs[0])
    assert all(torch.equal(resumed_weights[name], whole_weights[name]) for name in whole_weights)


def test_more_processes_than_the_machine_has_is_one_line_and_exit_2(tmp_path):
    proc = vae_train(tmp_path, "trainer.devices=64", "trainer.accelerator=cpu")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.devices: 64 processes asked, this machine has" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_accumulation_of_zero_is_refused(tmp_path):
    proc = vae_train(tmp_path, "trainer.accumulate_grad_batches=0")
    assert proc.returncode == 2 and "trainer.accumulate_grad_batches" in proc.stderr
