"""The base of every config section and the field types sections share.

Imports nothing from ``vae``: discriminator and data-source files define their own section
beside their class (one file per family), and ``vae/config.py`` mounts those sections from the
registries, so this module has to sit below both to keep the imports one-way.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]
FFTSize = Annotated[int, Field(ge=16, description="FFT size in samples")]
Beta = Annotated[float, Field(ge=0, lt=1)]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source, the key and what was expected."""


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
