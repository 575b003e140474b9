import copy

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae.config import ModelConfig
from vae.model import AudioVAE, Posterior, free_bits_kl, kl_to_kbps


def tiny(**kw) -> ModelConfig:
    return ModelConfig(channels=4, channel_multipliers=[1, 2], strides=[2, 4], latent_dim=3, **kw)


@pytest.mark.parametrize("activation", ["elu", "snake"])
@pytest.mark.parametrize("length", [800, 803])
def test_shapes_round_trip_any_length(activation, length):
    model = AudioVAE(tiny(activation=activation))
    out = model(torch.randn(2, 2, length))
    assert out.reconstruction.shape == (2, 2, length)
    assert out.posterior.mean.shape == (2, 3, -(-length // 8))
    assert (out.posterior.std > 0).all()


def test_config_changes_the_model():
    base = sum(p.numel() for p in AudioVAE(tiny()).parameters())
    assert sum(p.numel() for p in AudioVAE(tiny(weight_norm=False)).parameters()) < base
    assert sum(p.numel() for p in AudioVAE(tiny(kernel_size=3)).parameters()) < base
    assert sum(p.numel() for p in AudioVAE(tiny(residual_dilations=[1])).parameters()) < base
    mono = AudioVAE(tiny(audio_channels=1))
    assert mono(torch.randn(1, 1, 64)).reconstruction.shape == (1, 1, 64)
    floor = AudioVAE(tiny(min_std=0.5)).encode(torch.randn(1, 2, 64))
    assert float(floor.std.min()) >= 0.5


def test_eval_mode_decodes_the_mean_and_training_samples():
    model = AudioVAE(tiny())
    x = torch.randn(1, 2, 256)
    model.eval()
    assert torch.equal(model(x).reconstruction, model(x).reconstruction)
    model.train()
    assert not torch.equal(model(x).latent, model(x).latent)


def test_kl_matches_the_closed_form_of_torch_distributions():
    mean, std = torch.randn(2, 3, 5), torch.rand(2, 3, 5) + 0.1
    expected = kl_divergence(Normal(mean, std), Normal(0.0, 1.0))
    assert torch.allclose(Posterior(mean, std).kl(), expected, atol=1e-6)
    assert torch.allclose(Posterior(mean, std).kl_per_channel(), expected.mean(dim=(0, 2)), atol=1e-6)
    assert float(Posterior(torch.zeros(1, 2, 3), torch.ones(1, 2, 3)).kl().abs().max()) < 1e-7


def test_free_bits_floor_value_and_gradient():
    kl = torch.tensor([0.05, 0.5, 2.0], requires_grad=True)
    value = free_bits_kl(kl, free_bits=0.25)
    assert float(value) == pytest.approx(0.25 + 0.5 + 2.0)
    value.backward()
    assert kl.grad.tolist() == [0.0, 1.0, 1.0]  # below the floor: no push towards zero
    plain = torch.tensor([0.05, 0.5], requires_grad=True)
    free_bits_kl(plain, 0.0).backward()
    assert plain.grad.tolist() == [1.0, 1.0]


def test_kbps_conversion():
    # 1 nat/frame at 1000 frames/s = 1000/ln2 bits/s = 1.4427 kbps
    assert kl_to_kbps(1.0, 1000.0) == pytest.approx(1.0 / 0.6931471805599453)


@pytest.mark.parametrize("activation", ["elu", "snake"])
def test_in_place_activations_keep_outputs_and_gradients(activation):
    """The speed-ups (activations that overwrite a convolution's output) change no number: the
    same weights with every activation out of place give the same outputs and gradients."""
    torch.manual_seed(0)
    model = AudioVAE(ModelConfig(channels=8, channel_multipliers=[1, 2], strides=[2, 4],
                                 latent_dim=4, activation=activation))
    assert activation != "elu" or any(
        isinstance(m, torch.nn.ELU) and m.inplace for m in model.modules())
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, torch.nn.ELU):
            module.inplace = False
    audio = torch.randn(2, 2, 1000)
    results = []
    for net in (model, reference):
        out = net(audio, sample=False)
        (out.reconstruction.square().mean() + out.posterior.std.mean()).backward()
        results.append((out.reconstruction, {n: p.grad for n, p in net.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-5, atol=1e-7, msg=name)


def default_model_keys() -> set[str]:
    """Every parameter name of the default model, spelt out (not derived from the model), so a
    rename that old checkpoints could not load strictly fails here."""
    convs = ["encoder.net.0", "encoder.net.6", "decoder.net.0", "decoder.net.6"]
    for block in range(1, 5):
        convs.append(f"encoder.net.{block}.4")  # the strided conv after 3 units and an activation
        convs.append(f"decoder.net.{block}.1")  # the transposed conv after an activation
        for unit in range(3):
            convs += [f"encoder.net.{block}.{unit}.block.{i}" for i in (1, 3)]
            convs += [f"decoder.net.{block}.{unit + 2}.block.{i}" for i in (1, 3)]
    names = ("bias", "parametrizations.weight.original0", "parametrizations.weight.original1")
    return {f"{conv}.{name}" for conv in convs for name in names}


def test_default_model_parameter_names_are_unchanged():
    keys = set(AudioVAE(ModelConfig()).state_dict())
    assert len(keys) == 180 and keys == default_model_keys()
    # lstm_layers: 0 and causal: false are the default: spelling them out changes nothing
    AudioVAE(ModelConfig(lstm_layers=0, causal=False)).load_state_dict(
        AudioVAE(ModelConfig()).state_dict(), strict=True)


@pytest.mark.parametrize("causal", [False, True])
def test_lstm_layers_add_an_lstm_at_the_latent_rate(causal):
    base = AudioVAE(tiny(causal=causal))
    model = AudioVAE(tiny(causal=causal, lstm_layers=2))
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert [(m.input_size, m.num_layers) for m in lstms] == [(8, 2), (8, 2)]  # widest: 4 × 2
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == sum(p.numel() for m in lstms for p in m.parameters())
    out = model(torch.randn(2, 2, 803))
    assert out.reconstruction.shape == (2, 2, 803) and out.posterior.mean.shape == (2, 3, 101)
