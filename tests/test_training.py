"""Real Lightning training of tiny models: it learns, schedules survive resume, the adversarial
step is wired as specified, and a NaN stops training."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from tests.conftest import MICRO
from vae.config import VAEConfig
from vae.data.synthetic import render_chunk
from vae.training.module import AudioVAEModule, NonFiniteLossError
from vae.training.train import build_trainer, train

SR = 44100


def micro_config(**overrides) -> VAEConfig:
    return VAEConfig().override({**MICRO, "tracking.enabled": False, **overrides})


def fixed_chunks(config: VAEConfig, count: int = 4) -> torch.Tensor:
    samples = round(config.data.chunk_seconds * SR)
    chunks = [torch.from_numpy(render_chunk(7, "train", k, num_samples=samples)[0]) for k in range(count)]
    return torch.stack(chunks)


def loader(chunks: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(list(chunks), batch_size=batch_size, shuffle=False)


def validate(trainer: pl.Trainer, module: AudioVAEModule, chunks: torch.Tensor) -> dict[str, float]:
    return trainer.validate(module, loader(chunks, 4), verbose=False)[0]


def test_a_small_model_fits_fixed_chunks_and_halves_mel_distance(tmp_path):
    config = micro_config(**{"model.channels": 8, "trainer.max_steps": 150,
                             "trainer.val_every_steps": 150, "optim.lr": 3e-3,
                             "optim.scheduler": "constant", "loss.kl.weight": 1e-5})
    chunks = fixed_chunks(config)
    module = AudioVAEModule(config)
    trainer = build_trainer(config, tmp_path)
    before = validate(trainer, module, chunks)
    trainer.fit(module, loader(chunks, 2), loader(chunks, 4))
    after = validate(trainer, module, chunks)
    assert after["val/mel_distance"] <= 0.5 * before["val/mel_distance"], (before, after)
    assert after["val/si_sdr"] > before["val/si_sdr"]
    assert trainer.global_step == 150  # one step per batch: no discriminator steps counted


def _fit(config: VAEConfig, root, ckpt_path=None) -> tuple[AudioVAEModule, pl.Trainer]:
    chunks = fixed_chunks(config)
    module = AudioVAEModule(config)
    trainer = build_trainer(config, root)
    trainer.fit(module, loader(chunks, 2), loader(chunks, 4), ckpt_path=ckpt_path)
    return module, trainer


def test_warmup_schedules_and_discriminator_optimiser_survive_resume(tmp_path):
    base = {"loss.kl.warmup_steps": 10, "loss.kl.start_weight": 0.0, "loss.kl.weight": 1e-2,
            "adversarial.enabled": True, "adversarial.discriminators": ["mpd"],
            "adversarial.mpd.periods": [2, 3], "adversarial.channels": 4,
            "adversarial.warmup_steps": 3, "trainer.val_every_steps": 4}
    first, trainer = _fit(micro_config(**base, **{"trainer.max_steps": 4}), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert first.kl_schedule.steps_taken == 4 and first.kl_schedule.value() == pytest.approx(4e-3)
    disc_state = first.adversarial.optimizer_state_dict()

    resumed, trainer = _fit(micro_config(**base, **{"trainer.max_steps": 8}), tmp_path / "b", str(ckpt))
    assert trainer.global_step == 8
    assert resumed.kl_schedule.steps_taken == 8  # continued, not restarted
    assert resumed.kl_schedule.value() == pytest.approx(8e-3)
    assert resumed.adversarial_schedule.steps_taken == 8 and resumed.adversarial_active()

    # a fresh module loading the same checkpoint gets the schedule and discriminator optimiser
    fresh = AudioVAEModule(micro_config(**base))
    fresh.on_load_checkpoint(torch.load(ckpt, map_location="cpu", weights_only=True))
    assert fresh.kl_schedule.steps_taken == 4
    restored = fresh.adversarial.optimizer_state_dict()["optimizer"]["state"]
    assert restored.keys() == disc_state["optimizer"]["state"].keys() and len(restored) > 0


def _discriminator_steps_taken(module: AudioVAEModule) -> int:
    state = module.adversarial.optimizer_state_dict()["optimizer"]["state"]
    return int(next(iter(state.values()))["step"]) if state else 0


def test_adversarial_warmup_and_update_interval_in_real_training(tmp_path):
    config = micro_config(**{"adversarial.enabled": True, "adversarial.discriminators": ["msstft"],
                             "adversarial.msstft.fft_sizes": [128, 256], "adversarial.channels": 4,
                             "adversarial.warmup_steps": 3, "adversarial.update_every": 2,
                             "trainer.max_steps": 3, "trainer.val_every_steps": 3})
    chunks = fixed_chunks(config)
    module = AudioVAEModule(config)
    initial = [p.detach().clone() for p in module.adversarial.parameters()]
    trainer = build_trainer(config, tmp_path / "warm")
    trainer.fit(module, loader(chunks, 2), loader(chunks, 4))
    # during warmup: no adversarial term, no feature matching, no discriminator update
    assert "train/adversarial" not in trainer.logged_metrics
    assert "train/discriminator" not in trainer.logged_metrics
    assert all(torch.equal(a, b) for a, b in zip(initial, module.adversarial.parameters()))
    assert _discriminator_steps_taken(module) == 0

    # steps 0..7: adversarial from step 3 on, discriminator updated at steps 4 and 6
    config = config.override({"trainer.max_steps": 8, "trainer.val_every_steps": 8})
    module = AudioVAEModule(config)
    trainer = build_trainer(config, tmp_path / "adv")
    trainer.fit(module, loader(chunks, 2), loader(chunks, 4))
    assert _discriminator_steps_taken(module) == 2
    assert any(not torch.equal(a, b) for a, b in zip(initial, module.adversarial.parameters()))
    assert {"train/adversarial", "train/feature_matching", "train/discriminator"} <= set(trainer.logged_metrics)
    assert trainer.global_step == 8  # discriminator steps are not generator steps


def test_adversarial_weights_change_the_generator_loss():
    config = micro_config(**{"adversarial.enabled": True, "adversarial.discriminators": ["msd"],
                             "adversarial.msd.scales": 2, "adversarial.channels": 4})
    audio = fixed_chunks(config, 2)
    totals = {}
    for key in ("adversarial.adversarial_weight", "adversarial.feature_matching_weight"):
        for value in (0.0, 5.0):
            torch.manual_seed(0)
            module = AudioVAEModule(config.override({key: value}))
            _, total, _ = module.compute_losses(audio)
            totals[(key, value)] = float(total)
        assert totals[(key, 0.0)] != pytest.approx(totals[(key, 5.0)])


def test_non_finite_loss_stops_training(tmp_path):
    config = micro_config(**{"optim.lr": 1e30, "optim.scheduler": "constant", "trainer.max_steps": 20,
                             "trainer.gradient_clip": 0.0})
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step"):
        _fit(config, tmp_path)


@pytest.mark.slow
def test_cli_training_run_lands_in_mlflow_with_metrics_audio_and_checkpoint(tmp_path):
    overrides = [f"{k}={v}".replace(" ", "") for k, v in MICRO.items()] + [
        "trainer.max_steps=6", "trainer.val_every_steps=3", "tracking.experiment=cli"]
    proc = subprocess.run([sys.executable, "-m", "vae.cli.train", *overrides], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for metric in ("val/mel_distance", "val/stft_distance", "val/si_sdr", "val/kl_kbps",
                   "val/active_units", "train/loss", "train/stft", "train/mel", "train/kl"):
        assert metric in run.data.metrics, metric
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mel_distance")] == [3, 6]
    assert run.data.params["loss.kl.weight"] == str(VAEConfig().loss.kl.weight)
    audio_steps = client.list_artifacts(run.info.run_id, "audio")
    assert [a.path for a in audio_steps] == ["audio/step_0000003", "audio/step_0000006"]
    files = [a.path for a in client.list_artifacts(run.info.run_id, audio_steps[0].path)]
    assert any(f.endswith("original.wav") for f in files) and any(f.endswith("reconstruction.wav") for f in files)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.ckpt"]


def test_config_error_on_the_command_line_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vae.cli.train", "loss.kl.wieght=1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "loss.kl.wieght: unknown key" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_train_returns_metrics_of_the_final_weights(tmp_path):
    config = micro_config(**{"trainer.max_steps": 5, "trainer.val_every_steps": 4,
                             "trainer.out_dir": str(tmp_path)})
    result = train(config, run_dir=tmp_path / "run")
    assert result.global_step == 5
    assert set(result.metrics) >= {"val/mel_distance", "val/kl_kbps", "val/active_units"}
    assert result.last_checkpoint and result.mlflow_run_id is None
    assert copy.deepcopy(result.metrics) == result.metrics
    # last.ckpt holds the final step, not the step-4 validation's
    assert torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)["global_step"] == 5


def test_a_final_step_off_the_validation_interval_is_validated_kept_and_resumed(tmp_path):
    """max_steps need not be a multiple of val_every_steps: the final step is validated inside
    fit, so it can be the best checkpoint, and last.ckpt holds it to go on from."""
    config = micro_config(**{"trainer.max_steps": 3, "trainer.val_every_steps": 4,
                             "trainer.out_dir": str(tmp_path)})
    short = train(config, run_dir=tmp_path / "short")
    assert short.best_checkpoint and Path(short.best_checkpoint).name == "step0000003.ckpt"
    assert torch.load(short.last_checkpoint, map_location="cpu", weights_only=True)["global_step"] == 3

    steps = BatchRecorder()
    resumed = train(config.override({"trainer.max_steps": 6}), ckpt_path=short.last_checkpoint,
                    run_dir=tmp_path / "resumed", callbacks=[steps])
    assert sorted(steps.batches) == [4, 5, 6] and resumed.global_step == 6
    assert torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)["global_step"] == 6


class BatchRecorder(pl.Callback):
    """The training batches a run takes, by the optimiser step they feed."""

    def __init__(self) -> None:
        self.batches: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches[trainer.global_step + 1] = batch.clone()


class SaveAtValidation(pl.Callback):
    """A checkpoint written inside validation, as a sweep trial writes its own."""

    def __init__(self, path) -> None:
        self.path = path

    def on_validation_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("workers, stopped_at, saved_in", [
    (0, 4, "last.ckpt"), (1, 4, "last.ckpt"),  # one batch into epoch 1
    (0, 3, "last.ckpt"), (1, 3, "last.ckpt"),  # the end of epoch 0
    (0, 4, "validation")])
def test_a_resumed_run_is_the_unbroken_run(tmp_path, workers, stopped_at, saved_in):
    """Three batches an epoch: resuming mid-epoch goes on at the next batch of the same epoch
    (not its first), with that epoch's order, whether loader workers drew keys ahead or not, and
    with the posterior noise the unbroken run drew: the same weights, bit for bit. (A constant
    learning rate: a shorter max_steps would otherwise schedule another one.)"""
    config = micro_config(**{"data.train_chunks_per_epoch": 6, "data.num_workers": workers,
                             "trainer.val_every_steps": 2, "trainer.max_steps": 8,
                             "optim.scheduler": "constant", "trainer.out_dir": str(tmp_path)})
    unbroken, resumed = BatchRecorder(), BatchRecorder()
    whole = train(config, run_dir=tmp_path / "unbroken", callbacks=[unbroken])
    in_validation = tmp_path / "validation.ckpt"
    first = train(config.override({"trainer.max_steps": stopped_at}), run_dir=tmp_path / "first",
                  callbacks=[SaveAtValidation(in_validation)])
    ckpt = first.last_checkpoint if saved_in == "last.ckpt" else str(in_validation)
    again = train(config, ckpt_path=ckpt, run_dir=tmp_path / "resumed", callbacks=[resumed])
    assert sorted(resumed.batches) == list(range(stopped_at + 1, 9))
    for step, batch in resumed.batches.items():
        assert torch.equal(batch, unbroken.batches[step]), f"step {step}"
    weights = torch.load(again.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    expected = torch.load(whole.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert again.metrics == whole.metrics
