"""``data.source: musdb``: MUSDB18 tracks (listed by musdb, read with soundfile; see musdb.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vae.data.musdb import (
    TRAIN_STREAM,
    ChunkRef,
    TrackFiles,
    draw_chunk,
    list_tracks,
    plan_validation_chunks,
    prepare_wav_root,
    read_chunk,
)
from vae.data.source import DataSource, Split


class MusdbSource(DataSource):
    """Reads ``data.root`` (or ``$MUSDB_PATH``) in ``data.format``; no section of its own."""

    def prepare(self) -> None:
        # the .stem.mp4 -> wav conversion, once per machine
        prepare_wav_root(self.data.root, self.data.format, self.data.cache_dir)

    def dataset(self, split: Split, count: int) -> Dataset:
        data, chunk = self.data, self.chunk
        root = prepare_wav_root(data.root, data.format, data.cache_dir)
        tracks = list_tracks(root, split, data.sources, sample_rate=chunk.sample_rate,
                             channels=chunk.channels, min_frames=chunk.frames)
        if split == "train":
            return MusdbTrainChunks(tracks, data.sources, num_items=count, frames=chunk.frames,
                                    channels=chunk.channels, seed=data.seed)
        chunks = plan_validation_chunks(tracks, data.sources, chunk.frames, count, data.seed)
        return MusdbValidationChunks(tracks, chunks, frames=chunk.frames, channels=chunk.channels)


class _ChunkReader(Dataset):
    def __init__(self, tracks: Sequence[TrackFiles], frames: int, channels: int) -> None:
        self.tracks = list(tracks)
        self.frames = frames
        self.channels = channels

    def read(self, ref: ChunkRef) -> torch.Tensor:
        path = self.tracks[ref.track].files[ref.source]
        return torch.from_numpy(read_chunk(path, ref.start, self.frames, self.channels))


class MusdbTrainChunks(_ChunkReader):
    """Random chunks: key k -> a random track, source and offset drawn from an RNG seeded (seed, k).

    ``len`` is the number of chunks per epoch; the training sampler hands out new keys every epoch.
    """

    def __init__(
        self, tracks: Sequence[TrackFiles], sources: Sequence[str], *, num_items: int, frames: int,
        channels: int, seed: int,
    ) -> None:
        super().__init__(tracks, frames, channels)
        self.sources = tuple(sources)
        self.num_items = num_items
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def chunk_ref(self, key: int) -> ChunkRef:
        rng = np.random.default_rng([self.seed, TRAIN_STREAM, key])
        return draw_chunk(rng, self.tracks, self.sources, self.frames)

    def __getitem__(self, key: int) -> torch.Tensor:
        return self.read(self.chunk_ref(int(key)))


class MusdbValidationChunks(_ChunkReader):
    """The fixed validation chunks of :func:`plan_validation_chunks`, in order."""

    def __init__(
        self, tracks: Sequence[TrackFiles], chunks: Sequence[ChunkRef], *, frames: int, channels: int
    ) -> None:
        super().__init__(tracks, frames, channels)
        self.chunks = list(chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.read(self.chunks[index])
