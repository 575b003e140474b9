"""``data.source: folder``: any folder of audio files (``data.root``), as DAC, EnCodec and
stable-audio-tools train.

Files are found recursively in any format libsndfile reads; ``train/`` and ``valid/`` subfolders
split them when both exist, else each file's path hashes it into a split (``valid_fraction``), so
the split is deterministic and stays put when files are added. Chunks are resampled to the
model's rate (soxr) and mono is widened; chunks quieter than ``loudness_cutoff_lufs`` are drawn
again, as DAC's ``loudness_cutoff`` does. The listing is cached (see listing.py).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from vae.audio_files import adapt_channels, resample_frames
from vae.data.errors import DatasetError
from vae.data.listing import AudioFileEntry, list_audio_folder
from vae.data.settings import FolderDataConfig
from vae.data.source import ChunkFormat, DataSource, Split
from vae.loudness import integrated_loudness

SPLIT_FOLDERS = ("train", "valid")
TRAIN_STREAM, VALID_STREAM = 0, 1
# Validation chunks do not depend on data.seed: trials that sweep the seed stay comparable.
VALIDATION_SEED = 0
RESAMPLE_MARGIN = 16  # source frames read beyond the chunk, so the resampler's edge is trimmed


def split_of(relative_path: str, valid_fraction: float) -> Split:
    """A file's split from its path alone: stable across machines and when files are added."""
    bucket = int(hashlib.sha1(relative_path.encode()).hexdigest()[:8], 16) / 2**32
    return "valid" if bucket < valid_fraction else "train"


def split_files(files: Sequence[AudioFileEntry], valid_fraction: float) -> dict[str, list[AudioFileEntry]]:
    """train/ and valid/ subfolders when both exist, else the hash split (at least one each)."""
    tops = {f.path.split("/", 1)[0] for f in files if "/" in f.path}
    if set(SPLIT_FOLDERS) <= tops:
        return {s: [f for f in files if f.path.startswith(s + "/")] for s in SPLIT_FOLDERS}
    splits: dict[str, list[AudioFileEntry]] = {"train": [], "valid": []}
    for entry in files:
        splits[split_of(entry.path, valid_fraction)].append(entry)
    if not splits["valid"] and len(splits["train"]) > 1:  # a tiny folder: hold out one file
        splits["valid"].append(splits["train"].pop())
    return splits


class FolderSource(DataSource):
    config_section = FolderDataConfig
    section: FolderDataConfig

    def prepare(self) -> None:
        self._listing()  # once per machine: later trials find the listing cached

    def _listing(self):
        if not self.data.root:
            raise DatasetError("data.source=folder needs data.root: the folder of audio files")
        return list_audio_folder(self.data.root, self.section.listing_cache_dir)

    def dataset(self, split: Split, count: int) -> Dataset:
        listing = self._listing()
        files = usable_files(split_files(listing.files, self.section.valid_fraction)[split],
                             self.chunk, listing.root, split)
        seed = self.data.seed if split == "train" else VALIDATION_SEED
        stream = TRAIN_STREAM if split == "train" else VALID_STREAM
        return FolderChunks([str(listing.root / f.path) for f in files], files, self.chunk, count,
                            (seed, stream), self.section)


def usable_files(files: Sequence[AudioFileEntry], chunk: ChunkFormat, root, split: Split
                 ) -> list[AudioFileEntry]:
    """Files long enough for a chunk; the rest skipped with a warning, as musdb's short tracks."""
    long_enough = [f for f in files if f.seconds * chunk.sample_rate >= chunk.frames]
    if len(long_enough) < len(files):
        short = [f.path for f in files if f not in long_enough]
        warnings.warn(f"{root}: {len(short)} {split} file(s) shorter than a chunk are skipped: "
                      f"{', '.join(short[:5])}", stacklevel=3)
    if not long_enough:
        raise DatasetError(f"{root}: no {split} file is as long as a chunk "
                           f"({chunk.frames / chunk.sample_rate:.2f} s)")
    bad = [f.path for f in long_enough if f.channels > 2]
    if bad:
        raise DatasetError(f"{root / bad[0]} has more than 2 channels; expected mono or stereo")
    adapted = sum(f.sample_rate != chunk.sample_rate or f.channels != chunk.channels
                  for f in long_enough)
    if adapted:
        warnings.warn(f"{root}: {adapted} {split} file(s) are resampled to {chunk.sample_rate} Hz "
                      f"or widened to {chunk.channels} channels on every read", stacklevel=3)
    return long_enough


class FolderChunks(Dataset):
    """Chunk ``key`` = a file and an offset drawn from an RNG seeded (seed, stream, key), drawn
    again (up to ``max_draws``) while quieter than the cutoff. Any non-negative key is valid."""

    def __init__(self, paths: list[str], files: list[AudioFileEntry], chunk: ChunkFormat,
                 count: int, seed: tuple[int, int], section: FolderDataConfig) -> None:
        self.paths, self.files, self.chunk, self.count = paths, files, chunk, count
        self.seed, self.section = seed, section

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: int) -> torch.Tensor:
        rng = np.random.default_rng([*self.seed, int(key)])
        cutoff = self.section.loudness_cutoff_lufs
        for _ in range(self.section.max_draws):
            audio = self.read(rng)
            if cutoff is None or integrated_loudness(audio, self.chunk.sample_rate) >= cutoff:
                break
        return audio

    def read(self, rng: np.random.Generator) -> torch.Tensor:
        index = int(rng.integers(len(self.files)))
        entry, chunk = self.files[index], self.chunk
        needed = min(entry.frames, math.ceil(chunk.frames * entry.sample_rate / chunk.sample_rate)
                     + RESAMPLE_MARGIN)
        start = int(rng.integers(entry.frames - needed + 1))
        try:
            frames = sf.read(self.paths[index], frames=needed, start=start, dtype="float32",
                             always_2d=True)[0]
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise DatasetError(f"cannot read {self.paths[index]}: {exc}") from exc
        frames = resample_frames(adapt_channels(frames, chunk.channels), entry.sample_rate,
                                 chunk.sample_rate)[: chunk.frames]
        if frames.shape[0] < chunk.frames:  # rounding at the resampler's edge: pad a few samples
            frames = np.pad(frames, ((0, chunk.frames - frames.shape[0]), (0, 0)))
        return torch.from_numpy(np.ascontiguousarray(frames.T, dtype=np.float32))
