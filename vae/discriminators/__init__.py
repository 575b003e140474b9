"""GAN discriminators for the VAE's decoder output; ``build_discriminators`` picks them by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vae.config import AdversarialConfig
from vae.discriminators.base import Discriminator, DiscriminatorOutput
from vae.discriminators.mpd import MultiPeriodDiscriminator
from vae.discriminators.msd import MultiScaleDiscriminator
from vae.discriminators.msstft import MultiScaleSTFTDiscriminator
from vae.discriminators.multiband import MultiBandDiscriminator

# name in ``adversarial.discriminators`` → builder from (config, audio_channels)
DISCRIMINATOR_BUILDERS: dict[str, Callable[[AdversarialConfig, int], Discriminator]] = {
    "msd": lambda cfg, audio_channels: MultiScaleDiscriminator(
        cfg.msd.scales, cfg.channels, audio_channels),
    "mpd": lambda cfg, audio_channels: MultiPeriodDiscriminator(
        cfg.mpd.periods, cfg.channels, audio_channels),
    "msstft": lambda cfg, audio_channels: MultiScaleSTFTDiscriminator(
        cfg.msstft.fft_sizes, cfg.channels, audio_channels),
    "multiband": lambda cfg, audio_channels: MultiBandDiscriminator(
        cfg.multiband.fft_sizes, cfg.multiband.bands, cfg.channels, audio_channels),
}


def build_discriminators(config: AdversarialConfig, audio_channels: int = 2) -> nn.ModuleDict:
    """The discriminators named in ``config.discriminators``, in that order, keyed by name.

    ``audio_channels`` is the model's (``model.audio_channels``): the adversarial section does
    not repeat it."""
    unknown = [name for name in config.discriminators if name not in DISCRIMINATOR_BUILDERS]
    if unknown:
        raise ValueError(f"unknown discriminator(s) {unknown}; known: {list(DISCRIMINATOR_BUILDERS)}")
    return nn.ModuleDict(
        {name: DISCRIMINATOR_BUILDERS[name](config, audio_channels) for name in config.discriminators}
    )


__all__ = [
    "DISCRIMINATOR_BUILDERS",
    "Discriminator",
    "DiscriminatorOutput",
    "MultiBandDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "build_discriminators",
]
