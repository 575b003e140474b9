"""EnCodec's loss balancer: a loss weight becomes a share of the gradient at the decoder's output.

Every loss computed on the reconstruction (STFT, mel, waveform, adversarial, feature matching)
has its own scale, so in a plain weighted sum a weight means nothing until it has been tuned
against the others: the music study found ``loss.mel.weight`` worth 11–26 where 1 was the
default. The balancer removes the scale. For each loss ``i`` it takes the gradient ``g_i`` of the
loss at the reconstruction, divides it by an exponential moving average of its norm, and hands
the decoder

    Σ_i  (w_i / Σ_j w_j) · total_norm · g_i / (ema_i + epsilon)

so that, once the averages have settled, loss ``i`` supplies the share ``w_i / Σ w`` of the
gradient's norm, whatever its scale. Norms are taken per batch item and averaged over the batch
(EnCodec's ``per_batch_item``), so ``total_norm`` does not depend on the batch size. Each average
is bias-corrected (divided by the sum of the decay weights seen so far), so it equals the first
norm at the first step instead of starting near zero. Losses on the encoder side (the KL) do not
pass through here: they stay ordinary weighted terms.

The balancer is a plain object, not a module: its state (one average per loss name) is not a
parameter and goes into checkpoints through :meth:`Balancer.state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vae.config import BalancerConfig


@dataclass
class BalancedGradient:
    """The gradient to send back through the reconstruction, and what each loss contributed."""

    gradient: torch.Tensor  # same shape as the reconstruction
    norms: dict[str, torch.Tensor]  # raw gradient norm of each loss (per item, batch mean)
    shares: dict[str, torch.Tensor]  # each loss's share of the balanced gradient's norm; sum 1


class _NormAverage:
    """Bias-corrected EMA of one loss's gradient norm: Σ decay^k · norm_k / Σ decay^k."""

    def __init__(self) -> None:
        self.weighted_sum: torch.Tensor | None = None  # Σ decay^k · norm_k
        self.weight_total = 0.0  # Σ decay^k, a plain number: the same at every step

    def update(self, norm: torch.Tensor, decay: float) -> torch.Tensor:
        previous = 0.0 if self.weighted_sum is None else self.weighted_sum.to(norm.device)
        self.weighted_sum = decay * previous + norm.detach()
        self.weight_total = decay * self.weight_total + 1.0
        return self.weighted_sum / self.weight_total

    def state_dict(self) -> dict[str, float]:
        weighted_sum = 0.0 if self.weighted_sum is None else float(self.weighted_sum)
        return {"weighted_sum": weighted_sum, "weight_total": self.weight_total}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.weighted_sum = torch.tensor(float(state["weighted_sum"]))
        self.weight_total = float(state["weight_total"])


def per_item_norm(gradient: torch.Tensor) -> torch.Tensor:
    """L2 norm of each batch item's gradient, averaged over the batch."""
    return gradient.reshape(gradient.shape[0], -1).norm(dim=1).mean()


class Balancer:
    """Combines the gradients of named losses at one tensor into shares set by their weights."""

    def __init__(self, config: BalancerConfig,
                 across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """``across_processes`` averages a norm over data-parallel processes, so that every
        process scales by the norm of the whole batch, as one process with all of it would."""
        self.across_processes = across_processes or (lambda value: value)
        self.total_norm = config.total_norm
        self.ema_decay = config.ema_decay
        self.epsilon = config.epsilon
        self.averages: dict[str, _NormAverage] = {}

    def __call__(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                 reconstruction: torch.Tensor) -> BalancedGradient:
        """Balance ``losses`` (each a scalar computed from ``reconstruction``) by ``weights``.

        Losses whose weight is 0 are skipped: no gradient is computed and their average is left
        as it is (with none left, the gradient is zero, as a weighted sum of them would give).
        The graph is retained, so the caller can still backpropagate through it."""
        active = {name: loss for name, loss in losses.items() if weights[name] > 0}
        weight_sum = sum(weights[name] for name in active)
        gradient = torch.zeros_like(reconstruction)
        norms: dict[str, torch.Tensor] = {}
        scaled_norms: dict[str, torch.Tensor] = {}
        for name, loss in active.items():
            (loss_gradient,) = torch.autograd.grad(loss, reconstruction, retain_graph=True)
            norms[name] = self.across_processes(per_item_norm(loss_gradient))
            average = self.averages.setdefault(name, _NormAverage()).update(norms[name],
                                                                            self.ema_decay)
            scale = weights[name] / weight_sum * self.total_norm / (average + self.epsilon)
            gradient += scale * loss_gradient
            scaled_norms[name] = scale * norms[name]  # the norm of scale · g_i, without a pass
        scaled_total = sum(scaled_norms.values())
        shares = {name: value / scaled_total for name, value in scaled_norms.items()}
        return BalancedGradient(gradient, norms, shares)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only, so a checkpoint holding them loads with ``weights_only=True``."""
        return {name: average.state_dict() for name, average in self.averages.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        self.averages = {}
        for name, average_state in state.items():
            self.averages[name] = _NormAverage()
            self.averages[name].load_state_dict(average_state)
