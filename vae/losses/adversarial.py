"""GAN losses, and :class:`AdversarialLoss`, the one object that owns the discriminators.

The generator sees two unweighted terms, ``adversarial`` and ``feature_matching``; the
LightningModule weights them (``adversarial.adversarial_weight`` / ``feature_matching_weight``).
The discriminators are trained by ``AdversarialLoss.discriminator_step`` on their own optimiser,
so the generator's optimiser must only hold the generator's parameters.

Averaging conventions, chosen so that the loss scale does not depend on how many
sub-discriminators or discriminators a sweep trial uses (``adversarial_weight`` stays comparable):
each discriminator's loss is the mean over its sub-discriminators, and the totals are the mean
over the discriminators listed in ``adversarial.discriminators``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vae.config import AdversarialConfig, GanLossType
from vae.discriminators.registry import build_discriminator

LOSS_TYPES: tuple[str, ...] = typing.get_args(GanLossType)
# Keeps feature matching finite when a real activation map is exactly zero.
FEATURE_NORM_EPS = 1e-8


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor],
                       loss_type: GanLossType) -> torch.Tensor:
    """Loss that pushes real logits up and fake logits down, averaged over sub-discriminators.

    hinge:          mean(relu(1 - real)) + mean(relu(1 + fake))
    least_squares:  mean((real - 1)^2)   + mean(fake^2)
    """
    _check_loss_type(loss_type)
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError(f"need as many real as fake logits (>0), got {len(real_logits)} and "
                         f"{len(fake_logits)}")
    terms = []
    for real, fake in zip(real_logits, fake_logits):
        real, fake = real.float(), fake.float()
        if loss_type == "hinge":
            terms.append(F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        else:
            terms.append((real - 1).pow(2).mean() + fake.pow(2).mean())
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake_logits: Sequence[torch.Tensor], loss_type: GanLossType) -> torch.Tensor:
    """Loss that pushes the fake logits towards "real", averaged over sub-discriminators.

    hinge:          mean(relu(1 - fake))   (Encodec's form: no reward past the margin)
    least_squares:  mean((fake - 1)^2)
    """
    _check_loss_type(loss_type)
    if not fake_logits:
        raise ValueError("need at least one fake logit map")
    terms = []
    for fake in fake_logits:
        fake = fake.float()
        terms.append(F.relu(1 - fake).mean() if loss_type == "hinge" else (fake - 1).pow(2).mean())
    return torch.stack(terms).mean()


def feature_matching_loss(real_features: Sequence[Sequence[torch.Tensor]],
                          fake_features: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Relative L1 between the discriminator's hidden activations on real and on fake audio.

    Each layer gives ``mean|fake - real| / mean|real|`` (Encodec's normalisation: deep layers
    with large activations do not dominate); the result is the mean over all layers of all
    sub-discriminators. The real activations are treated as constants.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(f"need as many real as fake feature lists (>0), got {len(real_features)} "
                         f"and {len(fake_features)}")
    terms = []
    for real_layers, fake_layers in zip(real_features, fake_features):
        if len(real_layers) != len(fake_layers):
            raise ValueError(f"a sub-discriminator gave {len(real_layers)} real and "
                             f"{len(fake_layers)} fake feature maps")
        for real, fake in zip(real_layers, fake_layers):
            real, fake = real.detach().float(), fake.float()
            terms.append((fake - real).abs().mean() / real.abs().mean().clamp_min(FEATURE_NORM_EPS))
    if not terms:
        raise ValueError("no feature maps to match")
    return torch.stack(terms).mean()


def build_discriminators(config: AdversarialConfig, audio_channels: int) -> nn.ModuleDict:
    """The discriminators named in ``adversarial.discriminators``, in that order, keyed by name,
    each built from its section ``adversarial.<name>``. ``audio_channels`` is the model's
    (``model.audio_channels``): the adversarial section does not repeat it."""
    return nn.ModuleDict({
        name: build_discriminator(name, getattr(config, name), config.channels, audio_channels)
        for name in config.discriminators
    })


class AdversarialLoss(nn.Module):
    """Owns the discriminators, their AdamW optimiser and (optionally) an fp16 grad scaler.

    ``audio_channels`` must be the model's ``model.audio_channels`` (the discriminators' input
    width). Its state_dict holds the discriminator weights; the optimiser (and scaler) state goes
    through :meth:`optimizer_state_dict` / :meth:`load_optimizer_state_dict`.
    """

    def __init__(self, config: AdversarialConfig, audio_channels: int = 2,
                 use_grad_scaler: bool = False) -> None:
        super().__init__()
        _check_loss_type(config.loss_type)
        self.loss_type: GanLossType = config.loss_type
        self.discriminators = build_discriminators(config, audio_channels)
        # AdamW with torch's default weight decay (0.01), as DAC trains its discriminator.
        self.optimizer = torch.optim.AdamW(self.discriminators.parameters(), lr=config.lr,
                                           betas=tuple(config.betas))
        self.grad_scaler = self._make_grad_scaler(use_grad_scaler)
        # Optimiser state loaded from a checkpoint is applied at the next discriminator step, once
        # the parameters are on their final device (Lightning restores before moving the model).
        self._pending_optimizer_state: dict[str, Any] | None = None

    # ---- mixed precision ----------------------------------------------------------------------

    @staticmethod
    def _make_grad_scaler(enabled: bool) -> torch.amp.GradScaler:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.amp.GradScaler(device, enabled=enabled)

    def enable_grad_scaler(self) -> None:
        """Scale the discriminator loss (for fp16 training); a no-op if already enabled."""
        if not self.grad_scaler.is_enabled():
            self.grad_scaler = self._make_grad_scaler(True)

    # ---- the two steps ------------------------------------------------------------------------

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step of every discriminator on ``real`` vs ``fake`` (both detached).

        Returns detached scalars: ``discriminator`` (mean over discriminators) and
        ``discriminator/<name>``."""
        losses = self.discriminator_backward(real, fake)
        self.discriminator_optimizer_step()
        return losses

    def discriminator_backward(self, real: torch.Tensor, fake: torch.Tensor,
                               scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Add the gradient of ``scale`` x the discriminators' loss to their ``.grad``: several
        calls with ``scale = 1/k`` then one :meth:`discriminator_optimizer_step` take the step of
        one batch k times as large (gradient accumulation). Returns what discriminator_step does."""
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
        self._apply_pending_optimizer_state()
        batch = real.shape[0]
        # One pass over [real; fake]: half the kernel launches; no layer mixes batch items.
        both = torch.cat([real.detach(), fake.detach()], dim=0)
        with torch.enable_grad():
            per_discriminator = {}
            for name, discriminator in self.discriminators.items():
                logits, _ = discriminator(both)
                per_discriminator[name] = discriminator_loss(
                    [logit[:batch] for logit in logits], [logit[batch:] for logit in logits],
                    self.loss_type)
            total = torch.stack(list(per_discriminator.values())).mean()
            scaled = self.grad_scaler.scale(total * scale)
        scaled.backward()
        result = {"discriminator": total.detach()}
        result.update({f"discriminator/{name}": loss.detach()
                       for name, loss in per_discriminator.items()})
        return result

    def discriminator_optimizer_step(self) -> None:
        """Step the discriminators on the gradients :meth:`discriminator_backward` added."""
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        # Nothing reads these gradients again; freeing them saves a copy of the weights' memory.
        self.optimizer.zero_grad(set_to_none=True)

    def generator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted ``adversarial`` and ``feature_matching`` terms for the generator.

        The discriminators are frozen while the graph is built, so a backward through these
        losses reaches ``fake`` (and the generator) but never the discriminator weights."""
        adversarial, feature_matching = [], []
        with self.frozen_discriminators():
            for discriminator in self.discriminators.values():
                with torch.no_grad():
                    _, real_features = discriminator(real.detach())
                fake_logits, fake_features = discriminator(fake)
                adversarial.append(generator_adversarial_loss(fake_logits, self.loss_type))
                feature_matching.append(feature_matching_loss(real_features, fake_features))
        return {"adversarial": torch.stack(adversarial).mean(),
                "feature_matching": torch.stack(feature_matching).mean()}

    @contextmanager
    def frozen_discriminators(self) -> Iterator[None]:
        """``requires_grad=False`` on every discriminator parameter, restored on exit."""
        parameters = list(self.discriminators.parameters())
        previous = [p.requires_grad for p in parameters]
        for p in parameters:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(parameters, previous):
                p.requires_grad_(flag)

    # ---- checkpointing ------------------------------------------------------------------------

    def optimizer_state_dict(self) -> dict[str, Any]:
        """Optimiser and grad-scaler state (the weights are in the module's own state_dict)."""
        if self._pending_optimizer_state is not None:
            optimizer_state = self._pending_optimizer_state
        else:
            optimizer_state = self.optimizer.state_dict()
        return {"optimizer": optimizer_state, "grad_scaler": self.grad_scaler.state_dict()}

    def load_optimizer_state_dict(self, state: Mapping[str, Any]) -> None:
        self._pending_optimizer_state = dict(state["optimizer"])
        scaler_state = state.get("grad_scaler")
        if scaler_state and self.grad_scaler.is_enabled():
            self.grad_scaler.load_state_dict(scaler_state)

    def _apply_pending_optimizer_state(self) -> None:
        if self._pending_optimizer_state is not None:
            # load_state_dict casts the moment tensors to each parameter's current device.
            self.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
