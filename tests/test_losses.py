import pytest
import torch

from vae.config import LossConfig
from vae.losses import ENCODER_TERMS, ReconstructionLoss, weighted_sum
from vae.losses.spectral import (MultiResolutionSTFTLoss, MultiScaleMelLoss, StereoSpectrograms,
                                 waveform_l1)
from vae.losses.stereo import stereo_weighted
from vae.dsp import mel_filterbank
from vae.metrics import audible_si_sdr, mel_distance, stft_distance
from vae.model import Posterior

SR = 16000


def signals(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(2, 2, 4096, generator=g) * 0.3
    prediction = target + 0.1 * torch.randn(2, 2, 4096, generator=g)
    return prediction, target


def small_losses() -> LossConfig:
    return LossConfig.model_validate({"stft": {"fft_sizes": [256, 128]},
                                      "mel": {"window_sizes": [256, 512], "n_mels": [16, 32]},
                                      "waveform": {"weight": 1.0}})


@pytest.mark.parametrize("loss", [MultiResolutionSTFTLoss([256, 64]),
                                  MultiScaleMelLoss(SR, [128, 512], [10, 40])])
def test_each_spectral_loss_is_zero_on_identical_input_and_positive_per_view(loss):
    prediction, target = signals()
    same = loss(StereoSpectrograms(target, target))
    assert same.shape == (4,) and float(same.abs().max()) < 1e-6
    assert (loss(StereoSpectrograms(prediction, target)) > 1e-3).all()
    assert float(waveform_l1(target, target)) == 0.0 < float(waveform_l1(prediction, target))


def test_mid_side_spectra_match_ffts_of_mid_and_side_signals():
    prediction, target = signals()
    spectra = StereoSpectrograms(prediction, target)
    pred_mag, _ = spectra.magnitudes(256)
    left, right = prediction[:, 0:1], prediction[:, 1:2]
    direct = StereoSpectrograms(torch.cat([(left + right) / 2, (left - right) / 2], 1), target[:, :2])
    assert torch.allclose(pred_mag[:, 2:], direct.magnitudes(256)[0][:, :2], atol=1e-4)


def si_sdr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return audible_si_sdr(prediction, target)[0]


def test_metrics_zero_on_identical_and_order_by_error():
    prediction, target = signals()
    assert float(mel_distance(target, target, SR)) < 1e-6
    assert float(stft_distance(target, target)) < 1e-6
    worse = target + 0.4 * torch.randn_like(target)
    assert float(mel_distance(worse, target, SR)) > float(mel_distance(prediction, target, SR)) > 0
    assert float(stft_distance(worse, target)) > float(stft_distance(prediction, target)) > 0
    assert float(si_sdr(prediction, target)) > float(si_sdr(worse, target))
    # scale invariance
    assert float(si_sdr(3.0 * prediction, target)) == pytest.approx(float(si_sdr(prediction, target)), abs=1e-3)


def test_stereo_weighting_and_a_side_only_error():
    per_view = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert float(stereo_weighted(per_view, 1.0, 0.0)) == 2.0
    assert float(stereo_weighted(per_view, 0.0, 1.0)) == 6.0
    assert float(stereo_weighted(per_view, 0.5, 2.0)) == 13.0
    assert float(stereo_weighted(torch.tensor([4.0]), 0.5, 2.0)) == 2.0
    # an error in the side channel only: invisible to mid, seen by side
    _, target = signals()
    mono = target.clone()
    mono[:, 1] = mono[:, 0]
    widened = mono.clone()
    widened[:, 0] += 0.05 * torch.randn_like(widened[:, 0])
    widened[:, 1] = 2 * mono[:, 0] - widened[:, 0]
    views = MultiResolutionSTFTLoss([256])(StereoSpectrograms(widened, mono))
    assert float(views[2]) < 1e-4 < float(views[3])


def _total(cfg: LossConfig, kl_weight=1e-2):
    prediction, target = signals()
    posterior = Posterior(torch.randn(2, 4, 16) * 0.5, torch.rand(2, 4, 16) + 0.2)
    loss = ReconstructionLoss(cfg, SR)
    values = loss(prediction, target, posterior, kl_weight)
    return float(weighted_sum(values, loss.weights(kl_weight))), values


WEIGHT_KEYS = ["stft.weight", "stft.spectral_convergence_weight", "stft.log_magnitude_weight",
               "mel.weight", "waveform.weight", "stereo.left_right_weight", "stereo.mid_side_weight",
               "stft.fft_sizes", "mel.window_sizes", "mel.n_mels", "kl.free_bits"]


@pytest.mark.parametrize("key", WEIGHT_KEYS)
def test_every_loss_key_changes_the_total(key):
    base_cfg = small_losses()
    base, _ = _total(base_cfg)
    section, name = key.split(".")
    current = getattr(getattr(base_cfg, section), name)
    new = [n * 2 for n in current] if isinstance(current, list) else (current * 3 + 0.5)
    if key == "kl.free_bits":
        new = 5.0
    changed_cfg = LossConfig.model_validate({**base_cfg.model_dump(), section: {
        **getattr(base_cfg, section).model_dump(), name: new}})
    changed, _ = _total(changed_cfg)
    assert changed != pytest.approx(base, rel=1e-4)


def test_kl_weight_changes_the_total_and_zero_weight_terms_are_skipped():
    cfg = small_losses()
    assert _total(cfg, 1e-2)[0] != pytest.approx(_total(cfg, 1.0)[0])
    cfg.waveform.weight = 0.0
    _, values = _total(cfg)
    assert "waveform" not in values and {"stft", "mel", "kl"} <= set(values)


def test_kl_term_is_the_free_bits_floor_of_each_channels_mean_kl():
    cfg = small_losses()
    cfg.kl.free_bits = 0.3
    posterior = Posterior(torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]]]).repeat(1, 2, 1),
                          torch.ones(2, 2, 2))
    posterior.mean[:, 1] = 0.0  # channel 0: mean KL 1 nat per frame; channel 1: 0, floored
    prediction, target = signals()
    values = ReconstructionLoss(cfg, SR)(prediction, target, posterior, 1e-2)
    assert float(values["kl"]) == pytest.approx(1.0 + 0.3)


def test_only_encoder_terms_are_free_of_the_reconstruction():
    """The balancer takes every other term's gradient at the reconstruction."""
    prediction, target = signals()
    prediction.requires_grad_(True)
    posterior = Posterior(torch.randn(2, 4, 16, requires_grad=True), torch.rand(2, 4, 16) + 0.2)
    values = ReconstructionLoss(small_losses(), SR)(prediction, target, posterior, 1e-2)
    for name, value in values.items():
        (gradient,) = torch.autograd.grad(value, prediction, allow_unused=True, retain_graph=True)
        assert (gradient is None) == (name in ENCODER_TERMS), name


def test_weighted_sum_refuses_unweighted_terms():
    with pytest.raises(KeyError, match="adversarial"):
        weighted_sum({"adversarial": torch.tensor(1.0)}, {"kl": 1.0})


def _reference_views(signal: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Magnitudes per view with autograd's own ops: torch.stft, complex mixing, abs().clamp()."""
    batch, channels, length = signal.shape
    spec = torch.stft(signal.reshape(-1, length), n_fft, hop_length=n_fft // 4,
                      window=torch.hann_window(n_fft), center=True, pad_mode="reflect",
                      return_complex=True)
    spec = spec.reshape(batch, channels, *spec.shape[-2:])
    if channels == 2:
        left, right = spec[:, 0:1], spec[:, 1:2]
        spec = torch.cat([spec, (left + right) / 2, (left - right) / 2], dim=1)
    return spec.abs().clamp(min=1e-4)


def _reference_losses(prediction: torch.Tensor, target: torch.Tensor, cfg: LossConfig,
                      sample_rate: int) -> dict[str, torch.Tensor]:
    """The spectral losses' definitions written out in plain autograd ops (dense filterbank,
    flattened norms): what the hand-written kernels must reproduce."""
    stft_total = 0.0
    for n_fft in cfg.stft.fft_sizes:
        pred, ref = _reference_views(prediction, n_fft), _reference_views(target, n_fft)
        diff_norm = torch.linalg.vector_norm((ref - pred).flatten(2), dim=2)
        ref_norm = torch.linalg.vector_norm(ref.flatten(2), dim=2).clamp(min=1e-5)
        log_l1 = (torch.log(ref) - torch.log(pred)).abs().transpose(0, 1).flatten(1).mean(dim=1)
        stft_total = stft_total + (diff_norm / ref_norm).mean(dim=0) + log_l1
    mel_total = 0.0
    for n_fft, n_mels in zip(cfg.mel.window_sizes, cfg.mel.n_mels):
        bank = mel_filterbank(sample_rate, n_fft, n_mels)
        pred = torch.einsum("mf,bvft->bvmt", bank, _reference_views(prediction, n_fft))
        ref = torch.einsum("mf,bvft->bvmt", bank, _reference_views(target, n_fft))
        diff = pred.clamp(min=1e-5).log10() - ref.clamp(min=1e-5).log10()
        mel_total = mel_total + diff.abs().transpose(0, 1).flatten(1).mean(dim=1)
    return {"stft": stereo_weighted(stft_total / len(cfg.stft.fft_sizes), 1.0, 1.0),
            "mel": stereo_weighted(mel_total / len(cfg.mel.window_sizes), 1.0, 1.0)}


@pytest.mark.parametrize("channels", [2, 1])
def test_fast_spectral_kernels_keep_values_and_gradients(channels):
    """The hand-written STFT backward, magnitude, banded mel projection, stereo mixing and fused
    STFT distances give the values and gradients of the plain formulas, at the default config's
    FFT sizes and mel counts (which include filter blocks with no bins at all)."""
    cfg = LossConfig()
    sample_rate = 44100
    g = torch.Generator().manual_seed(3)
    target = torch.randn(2, channels, 8192, generator=g) * 0.3
    prediction = target + 0.1 * torch.randn(target.shape, generator=g)
    prediction[..., :5000] *= 1e-6  # near silence: under the magnitude's floor, zero gradient
    target[..., 6000:7000] = 0  # and a silent target under a sounding prediction
    posterior = Posterior(torch.zeros(2, 3, 8), torch.ones(2, 3, 8))

    grads = {}
    fast_leaf = prediction.clone().requires_grad_(True)
    fast = ReconstructionLoss(cfg, sample_rate)(fast_leaf, target, posterior, 1.0)
    slow_leaf = prediction.clone().requires_grad_(True)
    slow = _reference_losses(slow_leaf, target, cfg, sample_rate)
    for name in ("stft", "mel"):
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-6, msg=name)
        grads[name] = [torch.autograd.grad(values[name], leaf, retain_graph=True)[0]
                       for values, leaf in ((fast, fast_leaf), (slow, slow_leaf))]
        fast_grad, slow_grad = grads[name]
        assert float(slow_grad.abs().max()) > 0
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-3,
                                   atol=1e-4 * float(slow_grad.abs().max()), msg=name)
        # where every window of every FFT size is silent, the clamp's zero gradient in both
        assert float(fast_grad[..., :2900].abs().max()) == 0.0 < float(fast_grad[..., 4000:].abs().max())
