"""The base of every config section, the field types sections share, and the registry entry.

Imports nothing from ``vae`` and nothing heavy: the sections of registered implementations sit
in torch-free modules (``vae/discriminators/settings.py``, ``vae/data/settings.py``), the two
registries pair each with its class as a :class:`LazyClass`, and ``vae/config.py`` mounts the
sections from the registries, so this module has to sit below all of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]
FFTSize = Annotated[int, Field(ge=16, description="FFT size in samples")]
Beta = Annotated[float, Field(ge=0, lt=1)]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source, the key and what was expected."""


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


@dataclass(frozen=True)
class LazyClass:
    """A registry entry: a class's settings section now, the class (``"module:Class"``) on first use.

    Reading ``config_section`` imports nothing, so the schema is built without torch; calling
    the entry imports the class and constructs it. A class with a ``config_section`` attribute
    quacks the same, so a class already imported may be registered as it is.
    """

    path: str
    config_section: type[Section] | None = None

    def resolve(self) -> type:
        """The class; its ``config_section`` must be this entry's (so the entry cannot rot)."""
        module_name, _, class_name = self.path.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if cls.config_section is not self.config_section:
            raise TypeError(f"registry entry {self.path} names section {_name(self.config_section)}, "
                            f"but the class takes {_name(cls.config_section)}")
        return cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


def _name(section: type[Section] | None) -> str:
    return "none" if section is None else section.__name__
