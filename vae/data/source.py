"""What a data source is: the interface every value of ``data.source`` implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch.utils.data import Dataset

from vae.config_base import Section
from vae.data.settings import DataSettings

Split = Literal["train", "valid"]


@dataclass(frozen=True)
class ChunkFormat:
    """The shape every chunk must have, fixed by the model: ``[channels, frames]`` float32."""

    frames: int
    sample_rate: int
    channels: int


class DataSource(ABC):
    """A source of training and validation chunks.

    A subclass may name a settings section (from settings.py) in ``config_section``, the one its
    registry entry names; it is mounted at ``data.<registry name>`` and handed to the constructor
    (``None`` when there is none).
    Training datasets are indexed by draw keys (any non-negative int, see ``EpochKeySampler``);
    validation datasets by ``0..count-1``, always the same chunks for the same settings.
    """

    config_section: ClassVar[type[Section] | None] = None

    def __init__(self, data: DataSettings, section: Section | None, chunk: ChunkFormat) -> None:
        self.data, self.section, self.chunk = data, section, chunk

    def prepare(self) -> None:
        """Once per machine before any dataset (Lightning's ``prepare_data``): caches, conversions."""

    @abstractmethod
    def dataset(self, split: Split, count: int) -> Dataset:
        """``count`` chunks of ``split`` (per epoch for ``train``)."""
