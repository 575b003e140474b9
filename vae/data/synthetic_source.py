"""``data.source: synthetic``: deterministic synthetic music (rendered by synthetic.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from vae.data.settings import SyntheticDataConfig
from vae.data.source import DataSource, Split
from vae.data.synthetic import SPLIT_IDS, render_chunk


class SyntheticSource(DataSource):
    """Chunks drawn by :func:`render_chunk` from the songs of ``data.synthetic.seed``."""

    config_section = SyntheticDataConfig
    section: SyntheticDataConfig

    def dataset(self, split: Split, count: int) -> Dataset:
        return SyntheticMusicDataset(
            count, seed=self.section.seed, split=split, num_samples=self.chunk.frames,
            sample_rate=self.chunk.sample_rate, channels=self.chunk.channels, sources=self.data.sources,
        )


class SyntheticMusicDataset(Dataset):
    """Chunks of synthetic music indexed by a draw key; ``len`` is the number of items per epoch.

    Any non-negative integer is a valid key: the training sampler hands out fresh keys every epoch,
    so training never sees the same chunk twice, while validation uses keys ``0..len-1``.
    """

    def __init__(
        self,
        num_items: int,
        *,
        seed: int,
        split: str,
        num_samples: int,
        sample_rate: int,
        channels: int,
        sources: Sequence[str] = ("mixture",),
    ) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
        self.num_items = num_items
        self.seed = seed
        self.split = split
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.channels = channels
        self.sources = tuple(sources)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, key: int) -> torch.Tensor:
        audio, _ = render_chunk(
            self.seed, self.split, int(key), num_samples=self.num_samples,
            sample_rate=self.sample_rate, channels=self.channels, sources=self.sources,
        )
        return torch.from_numpy(audio)


