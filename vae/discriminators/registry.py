"""THE list of discriminators: ``adversarial.discriminators`` names, config sections and classes.

Each name maps to a :class:`~vae.config_base.LazyClass`: its section (mounted by
``vae/config.py`` at ``adversarial.<name>``) and the path of its
:class:`~vae.discriminators.base.Discriminator` subclass, imported on first build. The sections
sit in settings.py, one torch-free module for the family, so the schema is read without
importing torch; one module rather than one per discriminator, so the whole ``adversarial.*``
schema reads in one file. Adding a discriminator = its class file, its section in settings.py
and one entry here; nothing else lists the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vae.config_base import LazyClass, Section
from vae.discriminators.settings import MPDConfig, MSDConfig, MSSTFTConfig, MultibandConfig

if TYPE_CHECKING:
    from vae.discriminators.base import Discriminator

DISCRIMINATORS: dict[str, LazyClass] = {
    "msd": LazyClass("vae.discriminators.msd:MultiScaleDiscriminator", MSDConfig),
    "mpd": LazyClass("vae.discriminators.mpd:MultiPeriodDiscriminator", MPDConfig),
    "msstft": LazyClass("vae.discriminators.msstft:MultiScaleSTFTDiscriminator", MSSTFTConfig),
    "multiband": LazyClass("vae.discriminators.multiband:MultiBandDiscriminator", MultibandConfig),
}


def build_discriminator(name: str, section: Section, channels: int, audio_channels: int) -> Discriminator:
    """The discriminator registered as ``name``, built from its section and the shared widths."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; known: {', '.join(DISCRIMINATORS)}")
    entry = DISCRIMINATORS[name]
    if not isinstance(section, entry.config_section):
        raise TypeError(f"discriminator {name!r} takes a {entry.config_section.__name__}, "
                        f"got {type(section).__name__}")
    return entry(section, channels, audio_channels)
