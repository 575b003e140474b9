"""``data.source: folder`` on a tree built at test time: nested folders, flac + ogg + wav, a mono
file, a 48 kHz file, a silent file, a corrupt file and a file shorter than a chunk."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import MICRO
from vae.config import VAEConfig
from vae.data.datamodule import build_datamodule
from vae.data.errors import DatasetError
from vae.data.folder_source import split_files
from vae.data.listing import list_audio_folder
from vae.loudness import integrated_loudness
from vae.training.train import train

SR = 44100


def music(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    notes = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 3))
    audio = notes[:, None] + 0.02 * rng.standard_normal((t.size, channels))
    return audio.astype(np.float32)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    (root / "album_a" / "disc1").mkdir(parents=True)
    (root / "album_b").mkdir()
    sf.write(root / "album_a" / "disc1" / "one.flac", music(3, SR, 2, 1), SR)
    sf.write(root / "album_a" / "two.ogg", music(3, SR, 2, 2), SR)
    sf.write(root / "album_b" / "three.wav", music(3, SR, 2, 3), SR)
    sf.write(root / "album_b" / "mono.wav", music(3, SR, 1, 4), SR)
    sf.write(root / "album_b" / "hires.wav", music(3, 48000, 2, 5), 48000)
    sf.write(root / "silent.wav", np.zeros((3 * SR, 2), np.float32), SR)
    sf.write(root / "short.wav", music(0.05, SR, 2, 6), SR)
    (root / "notes.txt").write_text("not audio")
    return root


def folder_config(root: Path, cache: Path, **overrides) -> VAEConfig:
    return VAEConfig().override({**MICRO, "tracking.enabled": False, "data.source": "folder",
                                 "data.root": str(root), "data.folder.listing_cache_dir": str(cache),
                                 "data.folder.valid_fraction": 0.3, **overrides})


def test_a_corrupt_file_is_refused_by_name(tree, tmp_path):
    (tree / "album_b" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DatasetError, match="broken.wav"):
        list_audio_folder(tree, tmp_path / "cache")


def test_chunks_are_resampled_widened_and_audible(tree, tmp_path):
    config = folder_config(tree, tmp_path / "cache", **{"data.val_chunks": 12})
    datamodule = build_datamodule(config)
    with pytest.warns(UserWarning) as caught:
        datamodule.setup("fit")
    said = " ".join(str(w.message) for w in caught)
    assert "short.wav" in said and "resampled" in said
    frames = round(config.data.chunk_seconds * SR)
    for dataset in (datamodule.train_dataset, datamodule.val_dataset):
        for key in range(6):
            chunk = dataset[key]
            assert chunk.shape == (2, frames) and chunk.dtype == torch.float32
            assert torch.isfinite(chunk).all()
    # the loudness cutoff redraws silence: no validation chunk comes from silent.wav
    cutoff = config.data.folder.loudness_cutoff_lufs
    assert all(integrated_loudness(datamodule.val_dataset[i], SR) >= cutoff for i in range(12))
    # validation chunks are fixed: a second data module reads the very same ones
    again = build_datamodule(config)
    again.setup("validate")
    assert all(torch.equal(again.val_dataset[i], datamodule.val_dataset[i]) for i in range(12))


def test_split_is_deterministic_and_honours_train_valid_folders(tree, tmp_path):
    files = list_audio_folder(tree, tmp_path / "cache").files
    first, second = split_files(files, 0.3), split_files(list(reversed(files)), 0.3)
    assert {s: sorted(f.path for f in v) for s, v in first.items()} == \
        {s: sorted(f.path for f in v) for s, v in second.items()}
    assert first["train"] and first["valid"]
    assert not {f.path for f in first["train"]} & {f.path for f in first["valid"]}
    split_root = tmp_path / "split"
    for split, name in (("train", "a.wav"), ("train", "b.flac"), ("valid", "c.wav")):
        (split_root / split).mkdir(parents=True, exist_ok=True)
        sf.write(split_root / split / name, music(1, SR, 2, 7), SR)
    by_folder = split_files(list_audio_folder(split_root, tmp_path / "cache").files, 0.5)
    assert [f.path for f in by_folder["valid"]] == ["valid/c.wav"]
    assert sorted(f.path for f in by_folder["train"]) == ["train/a.wav", "train/b.flac"]


def test_the_listing_is_cached_and_refreshed_only_for_changed_files(tree, tmp_path):
    cache = tmp_path / "cache"
    first = list_audio_folder(tree, cache)
    assert first.probed == len(first.files) == 7
    assert list_audio_folder(tree, cache).probed == 0  # every header from the cache
    changed = tree / "album_b" / "three.wav"
    sf.write(changed, music(4, SR, 2, 8), SR)
    os.utime(changed, ns=(1, 1))
    refreshed = list_audio_folder(tree, cache)
    assert refreshed.probed == 1
    assert next(f for f in refreshed.files if f.path == "album_b/three.wav").frames == 4 * SR
    shutil.rmtree(tree / "album_a")
    assert len(list_audio_folder(tree, cache).files) == 5


def test_a_missing_root_or_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_audio_folder(tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        list_audio_folder(tmp_path / "empty", tmp_path / "cache")


@pytest.mark.slow
def test_a_model_trains_on_a_folder(tree, tmp_path):
    config = folder_config(tree, tmp_path / "cache", **{
        "trainer.max_steps": 4, "trainer.val_every_steps": 2, "trainer.out_dir": str(tmp_path / "runs")})
    result = train(config)
    assert math.isfinite(result.metrics["val/mel_distance"])
