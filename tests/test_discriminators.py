"""Discriminators: output structure follows the config, gradients reach the input, STFTs stay fp32."""

from __future__ import annotations

import math
import subprocess
import sys
import typing

import pytest
import torch

from vae.config import AdversarialConfig
from vae.discriminators.base import complex_spectrogram, grouped_conv_groups
from vae.discriminators.mpd import MultiPeriodDiscriminator
from vae.discriminators.msd import MultiScaleDiscriminator
from vae.discriminators.msstft import MultiScaleSTFTDiscriminator
from vae.discriminators.multiband import MultiBandDiscriminator, band_bin_ranges
from vae.discriminators.registry import DISCRIMINATORS, build_discriminator
from vae.discriminators.settings import MPDConfig, MSDConfig, MSSTFTConfig, MultibandConfig
from vae.losses.adversarial import build_discriminators

DISCRIMINATOR_NAMES = tuple(DISCRIMINATORS)

BATCH, AUDIO_CHANNELS, LENGTH = 2, 2, 8192
SMALL = 4  # first-layer width for fast tests


@pytest.fixture
def waveform() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(BATCH, AUDIO_CHANNELS, LENGTH)


def make_msd(scales: int, channels: int = SMALL, audio_channels: int = AUDIO_CHANNELS):
    return MultiScaleDiscriminator(MSDConfig(scales=scales), channels, audio_channels)


def make_mpd(periods, channels: int = SMALL, audio_channels: int = AUDIO_CHANNELS):
    return MultiPeriodDiscriminator(MPDConfig(periods=periods), channels, audio_channels)


def make_msstft(fft_sizes, channels: int = SMALL, audio_channels: int = AUDIO_CHANNELS):
    return MultiScaleSTFTDiscriminator(MSSTFTConfig(fft_sizes=fft_sizes), channels, audio_channels)


def make_multiband(fft_sizes, bands, channels: int = SMALL, audio_channels: int = AUDIO_CHANNELS):
    return MultiBandDiscriminator(MultibandConfig(fft_sizes=fft_sizes, bands=bands), channels, audio_channels)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def halve_up(size: int, times: int) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


def stft_frames(length: int, fft_size: int) -> int:
    return length // (fft_size // 4) + 1  # centred STFT


def assert_gradient_reaches_input(discriminator: torch.nn.Module, waveform: torch.Tensor) -> None:
    x = waveform.clone().requires_grad_(True)
    logits, features = discriminator(x)
    (sum(l.mean() for l in logits) + sum(f[-1].mean() for f in features)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in discriminator.parameters())


# ---- multi-scale (MelGAN) ---------------------------------------------------------------------


@pytest.mark.parametrize("scales", [1, 3])
def test_msd_one_logit_per_scale_each_on_a_halved_waveform(waveform, scales):
    msd = make_msd(scales)
    logits, features = msd(waveform)
    assert len(logits) == len(features) == scales
    for index, logit in enumerate(logits):
        # four stride-4 convs after pooling by 2 `index` times
        assert logit.shape == (BATCH, 1, LENGTH // 2**index // 4**4)
    assert all(len(f) == 6 for f in features)  # input conv, 4 grouped convs, one more conv


def test_msd_gradients_reach_input(waveform):
    assert_gradient_reaches_input(make_msd(2), waveform)


def test_grouped_convs_have_valid_groups_for_any_width():
    for in_width, out_width in [(16, 64), (64, 256), (1024, 1024), (3, 12), (6, 24), (5, 7)]:
        groups = grouped_conv_groups(in_width, out_width)
        assert in_width % groups == 0 and out_width % groups == 0
    assert grouped_conv_groups(256, 1024) == 64  # MelGAN's choice at its default width


# ---- multi-period (HiFi-GAN) ------------------------------------------------------------------


@pytest.mark.parametrize("periods", [[2, 3, 5, 7, 11], [4, 9]])
def test_mpd_one_logit_per_period_with_period_columns(waveform, periods):
    mpd = make_mpd(periods)
    logits, features = mpd(waveform)
    assert len(logits) == len(features) == len(periods)
    for period, logit, maps in zip(periods, logits, features):
        rows = math.ceil(LENGTH / period)
        for _ in range(4):  # four (5, 1) convs with stride 3 and padding 2
            rows = (rows - 1) // 3 + 1
        assert logit.shape == (BATCH, 1, rows, period)
        assert all(m.shape[-1] == period for m in maps)


def test_mpd_gradients_reach_input(waveform):
    assert_gradient_reaches_input(make_mpd([3, 5]), waveform)


# ---- multi-scale STFT (Encodec) ---------------------------------------------------------------


@pytest.mark.parametrize("fft_sizes", [[512, 256, 128], [1024]])
def test_msstft_one_logit_per_fft_size(waveform, fft_sizes):
    msstft = make_msstft(fft_sizes)
    logits, features = msstft(waveform)
    assert len(logits) == len(features) == len(fft_sizes)
    for fft_size, logit in zip(fft_sizes, logits):
        # time resolution kept (dilated, not strided); three stride-2 convs along frequency
        assert logit.shape == (BATCH, 1, stft_frames(LENGTH, fft_size), halve_up(fft_size // 2 + 1, 3))


def test_msstft_gradients_reach_input(waveform):
    assert_gradient_reaches_input(make_msstft([256, 128]),
                                  waveform)


# ---- multi-band STFT (DAC) --------------------------------------------------------------------

DAC_BANDS = [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]


@pytest.mark.parametrize("bands", [DAC_BANDS, [(0.0, 0.5), (0.5, 1.0)]])
@pytest.mark.parametrize("fft_sizes", [[256, 128], [512]])
def test_multiband_logit_joins_the_bands_along_frequency(waveform, fft_sizes, bands):
    multiband = make_multiband(fft_sizes, bands)
    logits, features = multiband(waveform)
    assert len(logits) == len(features) == len(fft_sizes)
    for fft_size, logit, maps, sub in zip(fft_sizes, logits, features, multiband.sub_discriminators):
        assert len(sub.band_stacks) == len(bands)
        n_bins = fft_size // 2 + 1
        expected_bins = sum(halve_up(int(hi * n_bins) - int(lo * n_bins), 3) for lo, hi in bands)
        assert logit.shape == (BATCH, 1, stft_frames(LENGTH, fft_size), expected_bins)
        assert len(maps) == 5 * len(bands)  # five hidden convs per band


def test_band_bin_ranges_cover_the_spectrum_and_are_never_empty():
    assert band_bin_ranges(DAC_BANDS, 1025) == [(0, 102), (102, 256), (256, 512), (512, 768),
                                                (768, 1025)]
    tiny = band_bin_ranges(DAC_BANDS, 5)  # a 8-point FFT: bands narrower than a bin
    assert all(stop > start for start, stop in tiny) and tiny[-1][1] == 5


def test_multiband_gradients_reach_input(waveform):
    assert_gradient_reaches_input(
        make_multiband([256], [(0.0, 0.3), (0.3, 1.0)]), waveform)


def test_multiband_bands_change_outputs(waveform):
    torch.manual_seed(1)
    two = make_multiband([256], [(0.0, 0.5), (0.5, 1.0)])
    torch.manual_seed(1)
    shifted = make_multiband([256], [(0.0, 0.25), (0.25, 1.0)])
    # same weights (same seed, same structure), different band edges → different logits
    assert n_params(two) == n_params(shifted)
    assert not torch.allclose(two(waveform)[0][0], shifted(waveform)[0][0])


# ---- shared behaviour ------------------------------------------------------------------------


def test_complex_spectrogram_stacks_real_and_imag_per_channel_in_fp32():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 1024)
    window = torch.hann_window(256)
    spec = complex_spectrogram(x, window, 64)
    reference = torch.stft(x[1, 1], 256, 64, window=window, center=True, pad_mode="constant",
                           normalized=True, return_complex=True).T  # [frames, bins]
    assert spec.shape == (2, 4, 17, 129)
    torch.testing.assert_close(spec[1, 2], reference.real)
    torch.testing.assert_close(spec[1, 3], reference.imag)
    # Under bf16 autocast and with bf16 input the FFT still runs in fp32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert complex_spectrogram(x.bfloat16(), window, 64).dtype == torch.float32


def test_stft_discriminators_run_under_autocast(waveform):
    for discriminator in (make_msstft([256]),
                          make_multiband([256], [(0.0, 0.5), (0.5, 1.0)])):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _ = discriminator(waveform.bfloat16())
        assert all(torch.isfinite(l.float()).all() for l in logits)


def test_wrong_channel_count_is_a_clear_error():
    mpd = make_mpd([2], audio_channels=2)
    with pytest.raises(ValueError, match=r"\[batch, 2, time\]"):
        mpd(torch.randn(1, 1, 4096))


def test_mono_discriminators_take_mono_audio():
    config = AdversarialConfig(discriminators=list(DISCRIMINATOR_NAMES), channels=SMALL,
                               msd={"scales": 1}, mpd={"periods": [2]}, msstft={"fft_sizes": [128]},
                               multiband={"fft_sizes": [128]})
    mono = torch.randn(1, 1, 4096)
    for discriminator in build_discriminators(config, audio_channels=1).values():
        logits, _ = discriminator(mono)
        assert logits[0].shape[0] == 1


def test_invalid_sub_configs_are_rejected():
    with pytest.raises(ValueError, match="periods"):
        MPDConfig(periods=[2, 0])
    with pytest.raises(ValueError, match="fft_sizes"):
        MSSTFTConfig(fft_sizes=[])
    with pytest.raises(ValueError, match="scales"):
        MSDConfig(scales=0)
    with pytest.raises(ValueError, match="band"):
        MultibandConfig(fft_sizes=[128], bands=[(0.5, 0.2)])


# ---- build_discriminators and the config keys -------------------------------------------------


def small_config(**overrides) -> AdversarialConfig:
    base = dict(channels=SMALL, msd={"scales": 2}, mpd={"periods": [2, 3]},
                msstft={"fft_sizes": [256, 128]}, multiband={"fft_sizes": [256, 128]})
    base.update(overrides)
    return AdversarialConfig(**base)


def test_the_config_accepts_exactly_the_registered_names_and_mounts_their_sections():
    choices = typing.get_args(typing.get_args(AdversarialConfig.model_fields["discriminators"].annotation)[0])
    assert choices == DISCRIMINATOR_NAMES
    for name, cls in DISCRIMINATORS.items():
        assert AdversarialConfig.model_fields[name].annotation is cls.config_section
    with pytest.raises(ValueError, match="'msd', 'mpd', 'msstft' or 'multiband'"):
        AdversarialConfig(discriminators=["mpd", "hifi"])


def test_an_unknown_name_or_a_wrong_section_is_an_error():
    with pytest.raises(ValueError, match="unknown discriminator 'hifi'; known: msd, mpd"):
        build_discriminator("hifi", MPDConfig(), SMALL, AUDIO_CHANNELS)
    with pytest.raises(TypeError, match="takes a MPDConfig, got MSDConfig"):
        build_discriminator("mpd", MSDConfig(), SMALL, AUDIO_CHANNELS)


@pytest.mark.parametrize("names", [["mpd", "msstft"], ["multiband"], ["msstft", "msd", "mpd", "multiband"]])
def test_build_discriminators_builds_exactly_the_listed_ones_in_order(names):
    discriminators = build_discriminators(small_config(discriminators=names), AUDIO_CHANNELS)
    assert list(discriminators) == names


def test_sub_configs_reach_the_discriminators():
    config = small_config(discriminators=list(DISCRIMINATOR_NAMES), msd={"scales": 4},
                          mpd={"periods": [3, 7, 13]}, msstft={"fft_sizes": [512]},
                          multiband={"fft_sizes": [512, 256, 64], "bands": [(0.0, 0.5), (0.5, 1.0)]})
    built = build_discriminators(config, AUDIO_CHANNELS)
    assert len(built["msd"]) == 4
    assert [sub.period for sub in built["mpd"].sub_discriminators] == [3, 7, 13]
    assert [sub.fft_size for sub in built["msstft"].sub_discriminators] == [512]
    assert [sub.fft_size for sub in built["multiband"].sub_discriminators] == [512, 256, 64]
    assert all(len(sub.band_stacks) == 2 for sub in built["multiband"].sub_discriminators)


@pytest.mark.parametrize("name", DISCRIMINATOR_NAMES)
def test_channels_sets_the_width(name):
    narrow = build_discriminators(small_config(discriminators=[name], channels=2), AUDIO_CHANNELS)[name]
    wide = build_discriminators(small_config(discriminators=[name], channels=8), AUDIO_CHANNELS)[name]
    assert n_params(wide) > n_params(narrow)
    first_conv = next(m for m in wide.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)))
    assert first_conv.out_channels == 8


# ---- adding a discriminator: one file + one registry line, nothing else -------------------------

TOY_DISCRIMINATOR = """
import torch
from pydantic import Field

from vae.config_base import Section
from vae.discriminators.base import Discriminator, LeakyConvStack, SubDiscriminator, wn_conv1d
from vae.discriminators.registry import DISCRIMINATORS


class ToyConfig(Section):
    kernel: int = Field(5, ge=1)


class ToyDiscriminator(Discriminator):
    config_section = ToyConfig

    def __init__(self, config: ToyConfig, channels: int, audio_channels: int) -> None:
        conv = wn_conv1d(audio_channels, channels, config.kernel, padding=config.kernel // 2)
        super().__init__([SubDiscriminator(LeakyConvStack([conv]), wn_conv1d(channels, 1, 1))],
                         audio_channels)


DISCRIMINATORS["toy"] = ToyDiscriminator  # the registry line; the schema is read after it

from vae.config import ConfigError, VAEConfig
from vae.config_fields import field_spec
from vae.losses.adversarial import AdversarialLoss

config = VAEConfig().override({"adversarial.discriminators": ["toy", "mpd"],
                               "adversarial.toy.kernel": 3, "adversarial.channels": 4})
loss = AdversarialLoss(config.adversarial, config.model.audio_channels)
toy = loss.discriminators["toy"]
assert list(loss.discriminators) == ["toy", "mpd"]
assert toy.sub_discriminators[0].hidden.convs[0].kernel_size == (3,)
logits, features = toy(torch.randn(1, 2, 256))
assert logits[0].shape == (1, 1, 256)
assert "toy" in field_spec(VAEConfig, "adversarial.discriminators").choices
try:
    VAEConfig().override({"adversarial.toy.kernel": 0})
except ConfigError as exc:
    assert "adversarial.toy.kernel" in str(exc)
else:
    raise AssertionError("the toy section is not validated")
print("toy discriminator ok")
"""


def test_a_discriminator_added_to_the_registry_is_configurable_and_buildable():
    # A fresh interpreter: the registry line runs before the schema is read, as it would in a file.
    proc = subprocess.run([sys.executable, "-c", TOY_DISCRIMINATOR], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "toy discriminator ok" in proc.stdout, proc.stderr
