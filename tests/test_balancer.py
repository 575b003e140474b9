"""EnCodec's loss balancer: a weight is a share of the gradient at the reconstruction whatever the
loss's scale, zero weights cost nothing, the EMA survives resume, and with the balancer off the
gradients are exactly those of the weighted sum."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from tests.test_training import _fit, fixed_chunks, loader, micro_config
from vae.config import BalancerConfig
from vae.losses.balancer import Balancer, per_item_norm
from vae.training.module import AudioVAEModule
from vae.training.train import build_trainer

BALANCED = {"loss.balancer.enabled": True}


def two_losses_on_halves(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """An L1 on the first half of the samples and 1000 × an MSE on the second: the two gradients
    live on disjoint samples, so each one's part of a combined gradient can be measured apart."""
    half = x.shape[-1] // 2
    return {"small": x[..., :half].abs().mean(), "large": 1000.0 * (x[..., half:] - 0.5).pow(2).mean()}


def measured_shares(gradient: torch.Tensor) -> tuple[float, float]:
    half = gradient.shape[-1] // 2
    small, large = per_item_norm(gradient[..., :half]), per_item_norm(gradient[..., half:])
    return float(small / (small + large)), float(large / (small + large))


def test_losses_1000x_apart_with_weights_1_to_3_get_a_quarter_and_three_quarters():
    balancer = Balancer(BalancerConfig(enabled=True))
    weights = {"small": 1.0, "large": 3.0}
    generator = torch.Generator().manual_seed(0)
    shares = []
    for step in range(200):
        x = torch.randn(4, 2, 1024, generator=generator).requires_grad_()
        balanced = balancer(two_losses_on_halves(x), weights, x)
        shares.append(measured_shares(balanced.gradient))
        if step == 0:  # bias-corrected: the first step already has the configured total norm
            assert float(per_item_norm(balanced.gradient[..., :512])
                         + per_item_norm(balanced.gradient[..., 512:])) == pytest.approx(1.0, rel=1e-4)
        # the shares the balancer reports are the ones measured on its gradient
        assert float(balanced.shares["small"]) == pytest.approx(shares[-1][0], abs=1e-5)
    settled = torch.tensor(shares[-50:]).mean(dim=0)
    print(f"measured shares after warm-up: small {settled[0]:.4f}, large {settled[1]:.4f}")
    assert float(settled[0]) == pytest.approx(0.25, abs=0.02)
    assert float(settled[1]) == pytest.approx(0.75, abs=0.02)


def test_a_zero_weight_loss_is_not_computed_and_gets_no_share():
    x = torch.randn(2, 1, 64, requires_grad=True)
    # not connected to x: differentiating it at x would raise
    unconnected = torch.ones((), requires_grad=True) * 2.0
    balancer = Balancer(BalancerConfig(enabled=True))
    balanced = balancer({"used": x.pow(2).mean(), "unused": unconnected},
                        {"used": 1.0, "unused": 0.0}, x)
    assert set(balanced.shares) == {"used"} and float(balanced.shares["used"]) == pytest.approx(1.0)
    assert set(balancer.state_dict()) == {"used"}


def test_state_dict_round_trip_keeps_each_average():
    balancer = Balancer(BalancerConfig(enabled=True, ema_decay=0.9))
    x = torch.randn(3, 2, 128, requires_grad=True)
    for _ in range(3):
        balancer(two_losses_on_halves(x), {"small": 1.0, "large": 1.0}, x)
    copy = Balancer(BalancerConfig(enabled=True, ema_decay=0.9))
    copy.load_state_dict(balancer.state_dict())
    assert copy.state_dict() == balancer.state_dict()
    assert balancer.state_dict()["small"]["weight_total"] == pytest.approx(1 + 0.9 + 0.81)
    assert torch.equal(copy(two_losses_on_halves(x), {"small": 1.0, "large": 2.0}, x).gradient,
                       balancer(two_losses_on_halves(x), {"small": 1.0, "large": 2.0}, x).gradient)


class _CaptureGradients(pl.Callback):
    """Seeds each batch (the posterior sample) and keeps the generator's gradients of step 0."""

    def __init__(self) -> None:
        self.gradients: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        torch.manual_seed(1234)

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if not self.gradients:
            self.gradients = {name: p.grad.clone() for name, p in module.model.named_parameters()}


ADVERSARIAL = {"adversarial.enabled": True, "adversarial.discriminators": ["msstft"],
               "adversarial.msstft.fft_sizes": [128, 256], "adversarial.channels": 4,
               "loss.waveform.weight": 0.5, "trainer.gradient_clip": 0.0,
               "trainer.max_steps": 1, "trainer.val_every_steps": 1}


def _step_zero_gradients(config, root) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(gradients of Lightning's first training step, initial state of the module)."""
    module = AudioVAEModule(config)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    capture = _CaptureGradients()
    trainer = build_trainer(config, root, callbacks=[capture])
    chunks = fixed_chunks(config)
    trainer.fit(module, loader(chunks, 2), loader(chunks, 4))
    return capture.gradients, initial


def test_balancer_off_gradients_are_exactly_the_weighted_sums(tmp_path):
    config = micro_config(**ADVERSARIAL)
    gradients, initial = _step_zero_gradients(config, tmp_path / "off")
    reference = AudioVAEModule(config)
    reference.load_state_dict(initial)
    torch.manual_seed(1234)
    _, total, _ = reference.compute_losses(fixed_chunks(config)[:2])
    total.backward()  # today's step: backward of the weighted sum
    expected = {name: p.grad for name, p in reference.model.named_parameters()}
    assert gradients.keys() == expected.keys()
    assert all(torch.equal(gradients[name], expected[name]) for name in expected)

    balanced, _ = _step_zero_gradients(config.override(BALANCED), tmp_path / "on")
    assert not all(torch.equal(balanced[name], expected[name]) for name in expected)


def test_shares_are_logged_each_step_and_sum_to_one_without_zero_weight_terms(tmp_path):
    config = micro_config(**{**ADVERSARIAL, **BALANCED, "loss.waveform.weight": 0.0,
                             "trainer.max_steps": 2, "trainer.val_every_steps": 2})
    _, trainer = _fit(config, tmp_path)
    metrics = trainer.logged_metrics
    shares = {k.removeprefix("balancer/share_"): float(v) for k, v in metrics.items()
              if k.startswith("balancer/share_")}
    assert set(shares) == {"stft", "mel", "adversarial", "feature_matching"}  # no waveform, no kl
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0 < share < 1 for share in shares.values())
    assert all(float(metrics[f"balancer/norm_{name}"]) > 0 for name in shares)
    assert "train/waveform" not in metrics and "train/loss" in metrics


def test_the_average_survives_resume_and_an_old_checkpoint_loads(tmp_path):
    decay = BalancerConfig().ema_decay
    base = {**BALANCED, "trainer.val_every_steps": 4}
    first, _ = _fit(micro_config(**base, **{"trainer.max_steps": 4}), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["balancer"]
    assert saved == first.balancer.state_dict() and set(saved) == {"stft", "mel"}
    assert saved["mel"]["weight_total"] == pytest.approx(sum(decay ** k for k in range(4)))

    resumed, trainer = _fit(micro_config(**base, **{"trainer.max_steps": 8}), tmp_path / "b", str(ckpt))
    assert trainer.global_step == 8  # continued, not restarted:
    assert resumed.balancer.state_dict()["mel"]["weight_total"] == pytest.approx(
        sum(decay ** k for k in range(8)))

    # a checkpoint from before the balancer (or with it off) resumes with a fresh average
    _fit(micro_config(**{"trainer.max_steps": 4, "trainer.val_every_steps": 4}), tmp_path / "old")
    old = tmp_path / "old" / "checkpoints" / "last.ckpt"
    assert "balancer" not in torch.load(old, map_location="cpu", weights_only=True)
    upgraded, trainer = _fit(micro_config(**base, **{"trainer.max_steps": 6}), tmp_path / "c", str(old))
    assert trainer.global_step == 6
    assert upgraded.balancer.state_dict()["mel"]["weight_total"] == pytest.approx(1 + decay)
