"""Audio chunks for training: deterministic synthetic music or MUSDB18, behind one data module."""

from vae.data.datamodule import (
    AudioDataModule,
    EpochKeySampler,
    build_datamodule,
    chunk_samples,
    measure_loader_throughput,
)
from vae.data.musdb import DatasetError, convert_stems_to_wav, list_tracks, resolve_root
from vae.data.synthetic import SyntheticMusicDataset, render_chunk

__all__ = [
    "AudioDataModule",
    "DatasetError",
    "EpochKeySampler",
    "SyntheticMusicDataset",
    "build_datamodule",
    "chunk_samples",
    "convert_stems_to_wav",
    "list_tracks",
    "measure_loader_throughput",
    "render_chunk",
    "resolve_root",
]
