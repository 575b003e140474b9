"""GAN loss formulas and AdversarialLoss: who gets gradients, optimiser wiring, checkpoint state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vae.config import AdversarialConfig
from vae.discriminators.registry import DISCRIMINATORS
from vae.losses.adversarial import (
    AdversarialLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)

DISCRIMINATOR_NAMES = tuple(DISCRIMINATORS)

BATCH, AUDIO_CHANNELS, LENGTH = 2, 2, 4096


def small_config(**overrides) -> AdversarialConfig:
    base = dict(discriminators=list(DISCRIMINATOR_NAMES), channels=4, msd={"scales": 2},
                mpd={"periods": [2, 3]}, msstft={"fft_sizes": [256, 128]},
                multiband={"fft_sizes": [256, 128]})
    base.update(overrides)
    return AdversarialConfig(**base)


@pytest.fixture
def real() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(BATCH, AUDIO_CHANNELS, LENGTH) * 0.3


@pytest.fixture
def generator() -> nn.Module:
    torch.manual_seed(1)
    return nn.Conv1d(AUDIO_CHANNELS, AUDIO_CHANNELS, 3, padding=1)


def discriminator_weights(loss: AdversarialLoss) -> list[torch.Tensor]:
    return [p.detach().clone() for p in loss.discriminators.parameters()]


def same_weights(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ---- the pure loss functions on hand-made logits -------------------------------------------

REAL_VALUES = [[2.0, 0.5, -1.0], [0.0, 3.0]]
FAKE_VALUES = [[-2.0, 0.0, 1.5], [0.5, -0.25]]


def as_tensors(values: list[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor(v) for v in values]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_discriminator_hinge_loss_matches_its_formula():
    expected = mean(
        mean(max(0.0, 1 - r) for r in real) + mean(max(0.0, 1 + f) for f in fake)
        for real, fake in zip(REAL_VALUES, FAKE_VALUES)
    )
    value = discriminator_loss(as_tensors(REAL_VALUES), as_tensors(FAKE_VALUES), "hinge")
    assert value.item() == pytest.approx(expected)


def test_discriminator_least_squares_loss_matches_its_formula():
    expected = mean(
        mean((r - 1) ** 2 for r in real) + mean(f**2 for f in fake)
        for real, fake in zip(REAL_VALUES, FAKE_VALUES)
    )
    value = discriminator_loss(as_tensors(REAL_VALUES), as_tensors(FAKE_VALUES), "least_squares")
    assert value.item() == pytest.approx(expected)


def test_generator_losses_match_their_formulas():
    hinge = mean(mean(max(0.0, 1 - f) for f in fake) for fake in FAKE_VALUES)
    least_squares = mean(mean((f - 1) ** 2 for f in fake) for fake in FAKE_VALUES)
    assert generator_adversarial_loss(as_tensors(FAKE_VALUES), "hinge").item() == pytest.approx(hinge)
    assert generator_adversarial_loss(as_tensors(FAKE_VALUES), "least_squares").item() == \
        pytest.approx(least_squares)


def test_hinge_and_least_squares_differ():
    real, fake = as_tensors(REAL_VALUES), as_tensors(FAKE_VALUES)
    assert discriminator_loss(real, fake, "hinge") != discriminator_loss(real, fake, "least_squares")
    assert generator_adversarial_loss(fake, "hinge") != generator_adversarial_loss(fake, "least_squares")


def test_unknown_loss_type_is_an_error():
    with pytest.raises(ValueError, match="loss_type"):
        discriminator_loss(as_tensors(REAL_VALUES), as_tensors(FAKE_VALUES), "wasserstein")


def test_feature_matching_is_relative_l1_averaged_over_layers():
    real = [[torch.tensor([1.0, -2.0]), torch.tensor([4.0])], [torch.tensor([0.5, 0.5])]]
    fake = [[torch.tensor([2.0, 0.0]), torch.tensor([3.0])], [torch.tensor([0.5, 1.5])]]
    per_layer = [
        mean(abs(f - r) for f, r in zip(f_layer.tolist(), r_layer.tolist()))
        / mean(abs(r) for r in r_layer.tolist())
        for r_sub, f_sub in zip(real, fake) for r_layer, f_layer in zip(r_sub, f_sub)
    ]
    assert feature_matching_loss(real, fake).item() == pytest.approx(mean(per_layer))


def test_feature_matching_is_zero_for_identical_features_and_treats_real_as_constant():
    torch.manual_seed(0)
    real = [[torch.randn(3, 4, requires_grad=True) for _ in range(2)]]
    assert feature_matching_loss(real, [[f.detach().clone() for f in real[0]]]).item() == 0.0
    fake = [[torch.randn(3, 4, requires_grad=True) for _ in range(2)]]
    feature_matching_loss(real, fake).backward()
    assert all(f.grad is not None for f in fake[0])
    assert all(r.grad is None for r in real[0])


# ---- AdversarialLoss: the full step ------------------------------------------------------------


def test_discriminator_step_updates_discriminators_only(real, generator):
    loss = AdversarialLoss(small_config())
    before = discriminator_weights(loss)
    fake = generator(real)
    result = loss.discriminator_step(real, fake)

    assert set(result) == {"discriminator"} | {f"discriminator/{n}" for n in DISCRIMINATOR_NAMES}
    assert all(v.requires_grad is False and v.dim() == 0 for v in result.values())
    per_discriminator = torch.stack([result[f"discriminator/{n}"] for n in DISCRIMINATOR_NAMES])
    torch.testing.assert_close(result["discriminator"], per_discriminator.mean())
    # Every discriminator weight moved; the generator got nothing.
    after = discriminator_weights(loss)
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    assert generator.weight.grad is None and generator.bias.grad is None
    # Gradients are freed after the step.
    assert all(p.grad is None for p in loss.discriminators.parameters())


def test_generator_losses_train_the_generator_but_not_the_discriminators(real, generator):
    loss = AdversarialLoss(small_config())
    loss.discriminator_step(real, generator(real))
    weights = discriminator_weights(loss)

    losses = loss.generator_losses(real, generator(real))
    assert set(losses) == {"adversarial", "feature_matching"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    (losses["adversarial"] + losses["feature_matching"]).backward()

    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.discriminators.parameters())
    assert all(p.requires_grad for p in loss.discriminators.parameters())  # restored
    assert same_weights(weights, discriminator_weights(loss))
    # ... until the next discriminator step.
    loss.discriminator_step(real, generator(real))
    assert not same_weights(weights, discriminator_weights(loss))


def test_feature_matching_is_zero_when_fake_equals_real(real):
    losses = AdversarialLoss(small_config()).generator_losses(real, real.clone())
    assert losses["feature_matching"].item() == 0.0


def test_each_discriminator_loss_is_finite_and_its_own(real, generator):
    for name in DISCRIMINATOR_NAMES:
        loss = AdversarialLoss(small_config(discriminators=[name]))
        result = loss.discriminator_step(real, generator(real))
        assert set(result) == {"discriminator", f"discriminator/{name}"}
        assert torch.isfinite(result["discriminator"])


@pytest.mark.parametrize("method", ["discriminator_step", "generator_losses"])
def test_loss_type_changes_the_losses(real, generator, method):
    values = {}
    for loss_type in ("hinge", "least_squares"):
        torch.manual_seed(2)
        loss = AdversarialLoss(small_config(loss_type=loss_type))
        result = getattr(loss, method)(real, generator(real))
        values[loss_type] = result["discriminator" if method == "discriminator_step" else "adversarial"]
    assert not torch.isclose(values["hinge"], values["least_squares"])


def test_discriminator_step_trains_even_under_no_grad(real, generator):
    loss = AdversarialLoss(small_config(discriminators=["mpd"]))
    before = discriminator_weights(loss)
    with torch.no_grad():
        loss.discriminator_step(real, generator(real))
    assert not same_weights(before, discriminator_weights(loss))


# ---- optimiser wiring and checkpoint state -------------------------------------------------


def test_lr_and_betas_reach_the_optimiser(real, generator):
    config = small_config(discriminators=["msstft"], lr=3e-3, betas=(0.5, 0.9))
    loss = AdversarialLoss(config)
    group = loss.optimizer.param_groups[0]
    assert group["lr"] == 3e-3 and tuple(group["betas"]) == (0.5, 0.9)
    assert isinstance(loss.optimizer, torch.optim.AdamW)
    assert {id(p) for p in group["params"]} == {id(p) for p in loss.discriminators.parameters()}
    # Adam's first step moves each weight by about lr (m / sqrt(v) = ±1), so the largest move
    # is lr plus the tiny decoupled weight decay.
    before = discriminator_weights(loss)
    loss.discriminator_step(real, generator(real))
    largest_move = max((a - b).abs().max().item() for a, b in zip(discriminator_weights(loss), before))
    assert 0.9 * 3e-3 < largest_move < 1.1 * 3e-3


def test_optimiser_state_round_trips(real, generator):
    torch.manual_seed(3)
    original = AdversarialLoss(small_config(discriminators=["mpd", "multiband"]))
    for _ in range(2):
        original.discriminator_step(real, generator(real))
    saved = copy.deepcopy(original.optimizer_state_dict())
    assert saved["optimizer"]["state"]  # Adam moments exist after two steps

    restored = AdversarialLoss(small_config(discriminators=["mpd", "multiband"]))
    restored.load_state_dict(original.state_dict())
    restored.load_optimizer_state_dict(saved)
    fresh = AdversarialLoss(small_config(discriminators=["mpd", "multiband"]))
    fresh.load_state_dict(original.state_dict())  # same weights, no optimiser state

    fake = generator(real)
    for loss in (original, restored, fresh):
        loss.discriminator_step(real, fake)
    assert same_weights(discriminator_weights(original), discriminator_weights(restored))
    assert not same_weights(discriminator_weights(original), discriminator_weights(fresh))


def test_loaded_state_is_returned_before_the_next_step():
    loss = AdversarialLoss(small_config(discriminators=["msstft"], lr=1e-3))
    state = loss.optimizer_state_dict()
    state["optimizer"]["param_groups"][0]["lr"] = 5e-4
    other = AdversarialLoss(small_config(discriminators=["msstft"], lr=1e-3))
    other.load_optimizer_state_dict(state)
    assert other.optimizer_state_dict()["optimizer"]["param_groups"][0]["lr"] == 5e-4


def test_grad_scaler_is_off_by_default_and_works_when_enabled(real, generator):
    assert not AdversarialLoss(small_config(discriminators=["mpd"])).grad_scaler.is_enabled()
    loss = AdversarialLoss(small_config(discriminators=["mpd"]), use_grad_scaler=True)
    assert loss.grad_scaler.is_enabled()
    before = discriminator_weights(loss)
    result = loss.discriminator_step(real, generator(real))
    assert torch.isfinite(result["discriminator"])
    assert not same_weights(before, discriminator_weights(loss))
    scale = loss.optimizer_state_dict()["grad_scaler"]["scale"]
    assert scale > 1.0  # the scaled loss was used

    later = AdversarialLoss(small_config(discriminators=["mpd"]))
    later.enable_grad_scaler()
    later.load_optimizer_state_dict(loss.optimizer_state_dict())
    assert later.grad_scaler.get_scale() == scale


def test_discriminator_weights_are_in_the_module_state_dict():
    loss = AdversarialLoss(small_config(discriminators=["msd", "msstft"]))
    keys = loss.state_dict().keys()
    assert any(k.startswith("discriminators.msd.") for k in keys)
    assert any(k.startswith("discriminators.msstft.") for k in keys)
    assert not any(k.endswith("window") for k in keys)  # derived buffers are not stored


def test_real_and_fake_must_match(real):
    with pytest.raises(ValueError, match="shape"):
        AdversarialLoss(small_config(discriminators=["mpd"])).discriminator_step(real, real[:1])
