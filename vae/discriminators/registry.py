"""THE list of discriminators: ``adversarial.discriminators`` names, config sections and classes.

Adding a discriminator = one file (its :class:`~vae.config_base.Section` and its
:class:`~vae.discriminators.base.Discriminator` subclass, whose ``config_section`` names the
section) plus one entry here. ``vae/config.py`` derives the accepted names and mounts each
section at ``adversarial.<name>`` from this dict, so nothing else lists them.
"""

from __future__ import annotations

from vae.config_base import Section
from vae.discriminators.base import Discriminator
from vae.discriminators.mpd import MultiPeriodDiscriminator
from vae.discriminators.msd import MultiScaleDiscriminator
from vae.discriminators.msstft import MultiScaleSTFTDiscriminator
from vae.discriminators.multiband import MultiBandDiscriminator

DISCRIMINATORS: dict[str, type[Discriminator]] = {
    "msd": MultiScaleDiscriminator,
    "mpd": MultiPeriodDiscriminator,
    "msstft": MultiScaleSTFTDiscriminator,
    "multiband": MultiBandDiscriminator,
}


def build_discriminator(name: str, section: Section, channels: int, audio_channels: int) -> Discriminator:
    """The discriminator registered as ``name``, built from its section and the shared widths."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; known: {', '.join(DISCRIMINATORS)}")
    cls = DISCRIMINATORS[name]
    if not isinstance(section, cls.config_section):
        raise TypeError(f"discriminator {name!r} takes a {cls.config_section.__name__}, "
                        f"got {type(section).__name__}")
    return cls(section, channels, audio_channels)
