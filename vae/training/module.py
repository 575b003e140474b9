"""The LightningModule: one generator step per batch, an optional discriminator step, and the
weight-independent validation metrics. With ``loss.balancer.enabled`` the generator's gradient at
the reconstruction comes from the balancer (vae/losses/balancer.py) instead of the weighted sum."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytorch_lightning as pl
import torch

from vae.config import VAEConfig
from vae.losses import ENCODER_TERMS, ReconstructionLoss, weighted_sum
from vae.losses.adversarial import AdversarialLoss
from vae.losses.balancer import Balancer
from vae.loudness import at_evaluation_level
from vae.metric_table import METRICS, SAMPLED_SUFFIX
from vae.metrics import active_units, distortions
from vae.model import AudioVAE, kl_to_kbps
from vae.training.distributed import average_gradients, average_tensor, gathered, world_size
from vae.training.schedules import WarmupSchedule


class NonFiniteLossError(FloatingPointError):
    """The total loss became NaN or infinite; training stops rather than corrupting the weights."""


class AudioVAEModule(pl.LightningModule):
    def __init__(self, config: VAEConfig | dict[str, Any]) -> None:
        super().__init__()
        config = config if isinstance(config, VAEConfig) else VAEConfig.model_validate(config)
        self.config = config
        # Stored so that load_from_checkpoint rebuilds the same model; logged flat by train.py.
        self.save_hyperparameters({"config": config.to_dict()}, logger=False)
        self.model = AudioVAE(config.model)
        self.reconstruction_loss = ReconstructionLoss(config.loss, config.model.sample_rate)
        adv = config.adversarial
        self.adversarial = AdversarialLoss(adv, audio_channels=config.model.audio_channels) if adv.enabled else None
        kl = config.loss.kl
        self.kl_schedule = WarmupSchedule(kl.start_weight, kl.weight, kl.warmup_steps, kl.warmup_shape)
        self.adversarial_schedule = WarmupSchedule(0.0, 1.0, adv.warmup_steps, "step")
        balancer = config.loss.balancer
        self.balancer = Balancer(balancer, average_tensor) if balancer.enabled else None
        # Manual optimisation always: the discriminator steps on its own optimiser, and one
        # generator step per batch keeps global_step == batches == the unit of every warmup.
        self.automatic_optimization = False
        self.validation_examples: tuple[torch.Tensor, torch.Tensor] | None = None
        # Detached training logs summed over the batches of the current accumulation window.
        self._window_sums: dict[str, torch.Tensor | float] = {}
        self._window_batches = 0
        self._val_kl_sum: torch.Tensor | None = None
        self._val_kl_count = 0

    # ---- training -------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.adversarial is not None and str(self.trainer.precision) == "16-mixed":
            self.adversarial.enable_grad_scaler()
        if world_size() > 1:  # the weights come from rank 0; the posterior noise differs per rank
            torch.manual_seed(self.config.trainer.seed + self.global_rank)

    def adversarial_active(self) -> bool:
        return self.adversarial is not None and self.adversarial_schedule.value() > 0

    def loss_weights(self) -> dict[str, float]:
        weights = self.reconstruction_loss.weights(self.kl_schedule.value())
        weights["adversarial"] = self.config.adversarial.adversarial_weight
        weights["feature_matching"] = self.config.adversarial.feature_matching_weight
        return weights

    def compute_losses(self, audio: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
        """Named unweighted losses, their weighted total, and the model output."""
        output = self.model(audio)
        if self.balancer is not None:  # the balancer's gradients are taken in fp32
            output = dataclasses.replace(output, reconstruction=output.reconstruction.float())
        weights = self.loss_weights()
        losses = self.reconstruction_loss(output.reconstruction, audio, output.posterior,
                                          weights["kl"])
        if self.adversarial_active():
            losses.update(self.adversarial.generator_losses(audio, output.reconstruction))
        return losses, weighted_sum(losses, weights), output

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """One batch: its gradients are added; every ``trainer.accumulate_grad_batches``-th batch
        the gradients, averaged over data-parallel processes, make one step of each optimiser.
        Each loss is a mean over its batch, so k batches of b scaled by 1/k add up to one of k·b."""
        audio = batch
        step = self.global_step
        accumulate = self.config.trainer.accumulate_grad_batches
        losses, total, output = self.compute_losses(audio)
        objective, balancer_logs = self.generator_objective(losses, total, output.reconstruction)
        if not (torch.isfinite(total) and torch.isfinite(objective)):
            values = {k: float(v.detach()) for k, v in {**losses, **balancer_logs}.items()}
            raise NonFiniteLossError(f"non-finite loss at step {step}: total={float(total)} {values}")
        self.manual_backward(objective / accumulate)
        logs = {f"train/{name}": value.detach() for name, value in losses.items()}
        logs.update(balancer_logs)
        logs["train/loss"] = total.detach()
        discriminator_updates = (self.adversarial_active()
                                 and step % self.config.adversarial.update_every == 0)
        if discriminator_updates:
            disc = self.adversarial.discriminator_backward(audio, output.reconstruction.detach(),
                                                           scale=1.0 / accumulate)
            logs.update({f"train/{name}": value for name, value in disc.items()})
        for name, value in logs.items():
            self._window_sums[name] = self._window_sums.get(name, 0.0) + value
        self._window_batches += 1
        if self._window_batches < accumulate:
            return

        optimizer = self.optimizers()
        average_gradients(self.model.parameters())
        if self.config.trainer.gradient_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.config.trainer.gradient_clip,
                                gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        if discriminator_updates:
            average_gradients(self.adversarial.discriminators.parameters())
            self.adversarial.discriminator_optimizer_step()
        self.log_step(audio.shape[0] * accumulate)
        self.kl_schedule.step()
        self.adversarial_schedule.step()

    def log_step(self, batch_size: int) -> None:
        """The window's mean of every training log, over every process (one step, one point)."""
        names = list(self._window_sums)
        # One all-reduce for every log (Lightning's sync_dist would make one per value).
        means = average_tensor(torch.stack([torch.as_tensor(self._window_sums[name], dtype=torch.float32,
                                                             device=self.device) for name in names]))
        logs = dict(zip(names, means / self._window_batches))
        self._window_sums, self._window_batches = {}, 0
        logs["train/kl_weight"] = self.kl_schedule.value()
        logs["train/lr"] = self.optimizers().param_groups[0]["lr"]
        # Lightning uses a logged "step" as the logger's x-axis: generator steps done.
        logs["step"] = float(self.global_step)
        self.log_dict(logs, prog_bar=False, batch_size=batch_size)
        self.log("loss", logs["train/loss"], prog_bar=True, logger=False, batch_size=batch_size)

    def generator_objective(self, losses: dict[str, torch.Tensor], total: torch.Tensor,
                            reconstruction: torch.Tensor,
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar to backpropagate and the balancer's logs. Without the balancer: ``total``.

        With it: a scalar whose gradient at the reconstruction is the balanced gradient, plus the
        encoder's weighted terms. One ``manual_backward`` of it lets Lightning's precision plugin
        scale it like any loss (16-mixed's grad scaler), which ``reconstruction.backward`` would not."""
        if self.balancer is None:
            return total, {}
        weights = self.loss_weights()
        decoder_losses = {name: v for name, v in losses.items() if name not in ENCODER_TERMS}
        balanced = self.balancer(decoder_losses, weights, reconstruction)
        encoder_terms = weighted_sum({name: v for name, v in losses.items() if name in ENCODER_TERMS},
                                     weights)
        objective = (reconstruction * balanced.gradient).sum() + encoder_terms
        logs = {f"balancer/share_{name}": share.detach() for name, share in balanced.shares.items()}
        logs.update({f"balancer/norm_{name}": norm.detach() for name, norm in balanced.norms.items()})
        return objective, logs

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.config.optim
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=optim.betas,
                                      weight_decay=optim.weight_decay)
        max_steps = self.config.trainer.max_steps

        def lr_factor(step: int) -> float:
            if step < optim.warmup_steps:
                return (step + 1) / optim.warmup_steps
            if optim.scheduler == "cosine":
                progress = min((step - optim.warmup_steps) / max(max_steps - optim.warmup_steps, 1), 1.0)
                cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
                return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine
            if optim.scheduler == "exponential":
                return optim.gamma ** (step - optim.warmup_steps)
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint state that is not in parameters -----------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["schedules"] = {"kl": self.kl_schedule.state_dict(),
                                   "adversarial": self.adversarial_schedule.state_dict()}
        if self.balancer is not None:
            checkpoint["balancer"] = self.balancer.state_dict()
        if self.adversarial is not None:
            checkpoint["discriminator_optimizer"] = self.adversarial.optimizer_state_dict()
        # Every process's random stream (the posterior's training noise), so a resumed run draws
        # what an unbroken one would. Lightning builds the checkpoint on every process.
        checkpoint["rng"] = gathered({"cpu": torch.get_rng_state(), **(
            {"cuda": torch.cuda.get_rng_state()} if self.device.type == "cuda" else {})})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        schedules = checkpoint.get("schedules", {})
        if "kl" in schedules:
            self.kl_schedule.load_state_dict(schedules["kl"])
        if "adversarial" in schedules:
            self.adversarial_schedule.load_state_dict(schedules["adversarial"])
        if self.balancer is not None and "balancer" in checkpoint:  # absent from old checkpoints
            self.balancer.load_state_dict(checkpoint["balancer"])
        if self.adversarial is not None and "discriminator_optimizer" in checkpoint:
            self.adversarial.load_optimizer_state_dict(checkpoint["discriminator_optimizer"])
        streams = checkpoint.get("rng", [])
        if len(streams) == world_size():  # else (other process count): the freshly seeded ones
            stream = streams[self.global_rank]
            torch.set_rng_state(stream["cpu"])
            if "cuda" in stream and self.device.type == "cuda":
                torch.cuda.set_rng_state(stream["cuda"])

    # ---- validation: fixed-definition metrics -----------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_kl_sum = torch.zeros(self.config.model.latent_dim, device=self.device)
        self._val_kl_count = 0
        self.validation_examples = None

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        evaluation = self.config.evaluation
        sample_rate = self.config.model.sample_rate
        audio = at_evaluation_level(batch, sample_rate, evaluation)  # level-free figures
        posterior = self.model.encode(audio)
        # Seeded per batch, so every trial (and every validation) decodes the same draws.
        noise = torch.Generator(device=audio.device).manual_seed(evaluation.noise_seed + batch_idx)
        decodings = {"": posterior.mean, SAMPLED_SUFFIX: posterior.sample(noise)}
        for suffix, latent in decodings.items():
            prediction = self.model.decode(latent)[..., : audio.shape[-1]].float()
            for name, (value, weight) in distortions(prediction, audio, sample_rate, suffix).items():
                if weight:  # a batch of silent channels has no SI-SDR
                    self._log_metric(name, value, weight)
            if not suffix and self.validation_examples is None:
                n = self.config.tracking.audio_examples
                self.validation_examples = (audio[:n].detach().cpu(), prediction[:n].detach().cpu())
        kl = posterior.kl().float()
        self._val_kl_sum += kl.sum(dim=(0, 2))
        self._val_kl_count += kl.shape[0] * kl.shape[2]

    def _log_metric(self, name: str, value: torch.Tensor, weight: int) -> None:
        """A table metric under its validation key, averaged over the epoch weighted by ``weight``."""
        self.log(METRICS[name].key, value, on_step=False, on_epoch=True, batch_size=weight)

    def on_validation_epoch_end(self) -> None:
        if self._val_kl_count == 0:
            return
        kl_per_channel = self._val_kl_sum / self._val_kl_count
        self.log(METRICS["kl_kbps"].key, kl_to_kbps(float(kl_per_channel.sum()), self.model.frame_rate))
        self.log(METRICS["active_units"].key, float(active_units(kl_per_channel)))
        self.log("step", float(self.global_step))
