"""Data pipeline: synthetic music, MUSDB through the real musdb package, and the data module.

The MUSDB tests build tiny MUSDB18-HQ-shaped trees in tmp_path. Every file carries a signature:
the left channel is a constant that names (track, source) and the right channel is a ramp that
encodes the frame position, so a chunk tells exactly which file and offset it came from.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vae.config import ConfigError, VAEConfig
from vae.data.datamodule import AudioDataModule, build_datamodule, measure_loader_throughput
from vae.data.errors import DatasetError
from vae.data.musdb import convert_stems_to_wav, list_tracks
from vae.data.settings import STEM_NAMES
from vae.data.synthetic import render_chunk
from vae.data.synthetic_source import SyntheticMusicDataset

SR = 44100
TRAIN_TRACKS = ("Alpha Band - First Song", "Bravo Band - Second Song")
VALID_TRACKS = ("Actions - One Minute Smile", "Leaf - Summerghost")  # musdb's validation names


def make_config(overrides: dict | None = None) -> VAEConfig:
    return VAEConfig().override(overrides or {})


def all_batches(loader) -> torch.Tensor:
    return torch.cat(list(loader))


# ---- synthetic ---------------------------------------------------------------------------------


def test_synthetic_chunk_is_deterministic_float32_stereo():
    first, source = render_chunk(7, "train", 3, num_samples=SR)
    again, _ = render_chunk(7, "train", 3, num_samples=SR)
    assert first.dtype == np.float32 and first.shape == (2, SR)
    assert source == "mixture"
    np.testing.assert_array_equal(first, again)


def test_synthetic_channels_differ_because_events_are_panned():
    for key in range(5):
        audio, _ = render_chunk(0, "train", key, num_samples=SR)
        left, right = audio
        assert not np.allclose(left, right)
        assert abs(np.corrcoef(left, right)[0, 1]) < 0.999
        assert np.sqrt(np.mean(left**2)) > 0.01 and np.sqrt(np.mean(right**2)) > 0.01


def test_synthetic_peak_is_well_below_clipping_and_never_silent_for_mixtures():
    for key in range(20):
        audio, _ = render_chunk(1, "valid", key, num_samples=SR // 2)
        assert np.isfinite(audio).all()
        assert 0.2 <= np.abs(audio).max() <= 0.75


def test_synthetic_seed_and_split_change_content():
    base, _ = render_chunk(0, "train", 0, num_samples=SR)
    other_seed, _ = render_chunk(1, "train", 0, num_samples=SR)
    assert not np.allclose(base, other_seed)
    train = [render_chunk(0, "train", k, num_samples=4096)[0] for k in range(20)]
    valid = [render_chunk(0, "valid", k, num_samples=4096)[0] for k in range(20)]
    assert not any(np.allclose(t, v) for t in train for v in valid)


def treble_share(chunks, sample_rate: int = SR) -> float:
    """Share of the power above 2 kHz, pooled over chunks: large for drums (hats), tiny for bass."""
    power = sum(np.abs(np.fft.rfft(np.asarray(c).mean(0))) ** 2 for c in chunks)
    freqs = np.fft.rfftfreq(np.asarray(chunks[0]).shape[1], 1 / sample_rate)
    return float(power[freqs > 2000].sum() / power.sum())


def test_synthetic_sources_select_layers():
    bass = [render_chunk(0, "train", k, num_samples=SR, sources=["bass"])[0] for k in range(4)]
    drums = [render_chunk(0, "train", k, num_samples=SR, sources=["drums"])[0] for k in range(4)]
    assert treble_share(bass) < 0.001 < 0.003 < treble_share(drums)
    drawn = {render_chunk(0, "train", k, num_samples=256, sources=["bass", "vocals"])[1] for k in range(30)}
    assert drawn == {"bass", "vocals"}


def test_synthetic_follows_sample_rate_and_mono():
    audio, _ = render_chunk(0, "train", 0, num_samples=8000, sample_rate=8000, channels=1)
    assert audio.shape == (1, 8000) and np.abs(audio).max() > 0.2
    dm = AudioDataModule(make_config({"model.sample_rate": 16000, "model.audio_channels": 1}))
    assert next(iter(dm.train_dataloader())).shape == (8, 1, 16000)


def test_synthetic_dataset_item_is_tensor_of_render_chunk():
    dataset = SyntheticMusicDataset(4, seed=3, split="valid", num_samples=1000, sample_rate=SR, channels=2)
    expected, _ = render_chunk(3, "valid", 2, num_samples=1000)
    assert len(dataset) == 4
    assert torch.equal(dataset[2], torch.from_numpy(expected))


# ---- data module on synthetic data: every DataConfig key has an effect --------------------------


def test_batches_have_configured_shape():
    dm = build_datamodule(make_config({"data.batch_size": 3, "data.chunk_seconds": 0.25}))
    batch = next(iter(dm.train_dataloader()))
    assert batch.dtype == torch.float32
    assert batch.shape == (3, 2, round(0.25 * SR))
    dm = build_datamodule(make_config({"data.batch_size": 5, "data.chunk_seconds": 0.1}))
    assert next(iter(dm.train_dataloader())).shape == (5, 2, 4410)


def test_train_chunks_per_epoch_sets_epoch_length():
    config = make_config(
        {"data.batch_size": 4, "data.train_chunks_per_epoch": 10, "data.chunk_seconds": 0.05}
    )
    dm = AudioDataModule(config)
    loader = dm.train_dataloader()
    sizes = [len(b) for b in loader]
    assert len(loader) == math.ceil(10 / 4) and sizes == [4, 4, 2]


def test_val_chunks_are_fixed_and_counted():
    config = make_config({"data.val_chunks": 5, "data.batch_size": 2, "data.chunk_seconds": 0.05})
    dm = AudioDataModule(config)
    first = all_batches(dm.val_dataloader())
    assert first.shape[0] == 5
    assert torch.equal(first, all_batches(dm.val_dataloader()))
    assert torch.equal(first, all_batches(AudioDataModule(config).val_dataloader()))
    more = all_batches(AudioDataModule(config.override({"data.val_chunks": 7})).val_dataloader())
    assert more.shape[0] == 7 and torch.equal(more[:5], first)


def test_data_seed_changes_training_order_and_epochs_bring_new_chunks():
    base = {"data.train_chunks_per_epoch": 8, "data.batch_size": 4, "data.chunk_seconds": 0.05}
    a = AudioDataModule(make_config(base))
    b = AudioDataModule(make_config(base))
    c = AudioDataModule(make_config({**base, "data.seed": 1}))
    epoch0 = all_batches(a.train_dataloader())
    assert torch.equal(epoch0, all_batches(b.train_dataloader()))
    seeded = all_batches(c.train_dataloader())
    assert not torch.equal(epoch0, seeded)
    # synthetic: data.seed reorders the same chunks
    assert sorted(x.sum().item() for x in epoch0) == sorted(x.sum().item() for x in seeded)
    a.train_sampler.set_epoch(1)
    epoch1 = all_batches(a.train_dataloader())
    assert not any(torch.equal(x, y) for x in epoch0 for y in epoch1)


def test_synthetic_seed_changes_the_audio():
    base = {"data.val_chunks": 2, "data.chunk_seconds": 0.05}
    a = all_batches(AudioDataModule(make_config(base)).val_dataloader())
    b = all_batches(AudioDataModule(make_config({**base, "data.synthetic.seed": 1})).val_dataloader())
    assert not torch.allclose(a, b)


def test_sources_reach_the_synthetic_dataset():
    base = {"data.val_chunks": 4, "data.chunk_seconds": 0.5}
    bass = all_batches(AudioDataModule(make_config({**base, "data.sources": ["bass"]})).val_dataloader())
    drums = all_batches(AudioDataModule(make_config({**base, "data.sources": ["drums"]})).val_dataloader())
    assert treble_share(bass) < 0.001 < 0.003 < treble_share(drums)


def test_one_worker_gives_the_same_batches_as_none():
    base = {"data.train_chunks_per_epoch": 6, "data.batch_size": 3, "data.chunk_seconds": 0.05}
    in_process = all_batches(AudioDataModule(make_config(base)).train_dataloader())
    dm = AudioDataModule(make_config({**base, "data.num_workers": 1}))
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    assert torch.equal(in_process, all_batches(loader))


def test_measure_loader_throughput_runs_past_an_epoch():
    config = make_config({"data.train_chunks_per_epoch": 4, "data.batch_size": 2, "data.chunk_seconds": 0.05})
    dm = AudioDataModule(config)
    rate = measure_loader_throughput(dm, batches=5)
    assert rate > 0 and dm.train_sampler.epoch >= 1


def test_lightning_fit_gives_new_training_chunks_each_epoch_and_fixed_validation():
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(()))
            self.train_batches: list[tuple[int, torch.Tensor]] = []
            self.val_batches: list[tuple[int, torch.Tensor]] = []

        def training_step(self, batch, batch_idx):
            self.train_batches.append((self.current_epoch, batch.clone()))
            return (self.gain * batch).abs().mean()

        def validation_step(self, batch, batch_idx):
            self.val_batches.append((self.current_epoch, batch.clone()))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    config = make_config(
        {"data.train_chunks_per_epoch": 4, "data.batch_size": 2, "data.chunk_seconds": 0.02,
         "data.val_chunks": 2}
    )
    module = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=AudioDataModule(config))
    epoch0 = torch.cat([b for e, b in module.train_batches if e == 0])
    epoch1 = torch.cat([b for e, b in module.train_batches if e == 1])
    assert epoch0.shape == epoch1.shape == (4, 2, 882)
    assert not any(torch.equal(x, y) for x in epoch0 for y in epoch1)  # Lightning advanced the sampler
    val0 = torch.cat([b for e, b in module.val_batches if e == 0])
    val1 = torch.cat([b for e, b in module.val_batches if e == 1])
    assert torch.equal(val0, val1)


# ---- MUSDB18-HQ trees built at test time --------------------------------------------------------


def signature(track_index: int, source: str) -> np.float32:
    return np.float32((track_index * 8 + STEM_NAMES.index(source) + 1) / 100)


def write_track(
    root: Path, name: str, track_index: int, *, seconds: float = 3.0, sample_rate: int = SR,
    channels: int = 2, sources: tuple[str, ...] = STEM_NAMES,
) -> None:
    folder = root / "train" / name
    folder.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * sample_rate)
    ramp = (np.arange(frames) / frames).astype(np.float32)
    for source in sources:
        audio = np.stack([np.full(frames, signature(track_index, source), np.float32), ramp], axis=1)
        sf.write(folder / f"{source}.wav", audio[:, :channels], sample_rate, subtype="FLOAT")


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("musdb18hq")
    for index, name in enumerate(TRAIN_TRACKS + VALID_TRACKS):
        write_track(root, name, index)
    return root


def identify(chunk: torch.Tensor, names=TRAIN_TRACKS + VALID_TRACKS, seconds: float = 3.0):
    """(track name, source, first frame) of a chunk cut from a signature file."""
    left, right = chunk.numpy()
    assert np.all(left == left[0]), "a chunk must come from one file"
    matches = [(n, s) for i, n in enumerate(names) for s in STEM_NAMES if signature(i, s) == left[0]]
    assert len(matches) == 1
    total = int(seconds * SR)
    start = int(round(float(right[0]) * total))
    expected_ramp = (np.arange(start, start + chunk.shape[1]) / total).astype(np.float32)
    np.testing.assert_array_equal(right, expected_ramp)
    return matches[0][0], matches[0][1], start


def musdb_config(root: Path | None, overrides: dict | None = None) -> VAEConfig:
    settings = {"data.source": "musdb", "data.chunk_seconds": 0.5, "data.batch_size": 4,
                "data.train_chunks_per_epoch": 24, "data.val_chunks": 6}
    if root is not None:
        settings["data.root"] = str(root)
    settings.update(overrides or {})
    return make_config(settings)


def test_musdb_split_membership_follows_musdb(musdb_root):
    train = list_tracks(musdb_root, "train", ["mixture"], sample_rate=SR, channels=2, min_frames=SR)
    valid = list_tracks(musdb_root, "valid", ["mixture"], sample_rate=SR, channels=2, min_frames=SR)
    assert [t.name for t in train] == sorted(TRAIN_TRACKS)
    assert [t.name for t in valid] == sorted(VALID_TRACKS)
    assert train[0].files["mixture"] == str(musdb_root / "train" / sorted(TRAIN_TRACKS)[0] / "mixture.wav")
    assert train[0].num_frames == 3 * SR


def test_musdb_chunks_come_from_the_right_files(musdb_root):
    dm = AudioDataModule(musdb_config(musdb_root, {"data.sources": ["mixture", "vocals"]}))
    train = [identify(c) for c in all_batches(dm.train_dataloader())]
    valid = [identify(c) for c in all_batches(dm.val_dataloader())]
    assert len(train) == 24 and len(valid) == 6
    assert {name for name, _, _ in train} == set(TRAIN_TRACKS)
    assert {name for name, _, _ in valid} == set(VALID_TRACKS)  # round-robin covers every track
    assert {src for _, src, _ in train} == {"mixture", "vocals"}
    assert len({start for _, _, start in train}) > 20  # random offsets
    assert all(0 <= start <= 3 * SR - SR // 2 for _, _, start in train + valid)


def test_musdb_mono_model_averages_the_channels_of_the_same_chunks(musdb_root):
    stereo = AudioDataModule(musdb_config(musdb_root, {"data.sources": ["bass"]}))
    mono = AudioDataModule(musdb_config(musdb_root, {"data.sources": ["bass"], "model.audio_channels": 1}))
    stereo_batch = next(iter(stereo.train_dataloader()))
    mono_batch = next(iter(mono.train_dataloader()))
    assert mono_batch.shape == (4, 1, SR // 2)
    assert {identify(c)[1] for c in stereo_batch} == {"bass"}
    torch.testing.assert_close(mono_batch, stereo_batch.mean(1, keepdim=True))


def test_musdb_validation_is_fixed_per_seed_and_training_reproducible(musdb_root):
    config = musdb_config(musdb_root)
    a, b = AudioDataModule(config), AudioDataModule(config)
    assert torch.equal(all_batches(a.val_dataloader()), all_batches(b.val_dataloader()))
    assert torch.equal(all_batches(a.val_dataloader()), all_batches(a.val_dataloader()))
    assert torch.equal(all_batches(a.train_dataloader()), all_batches(b.train_dataloader()))
    reseeded = AudioDataModule(config.override({"data.seed": 5}))
    assert not torch.equal(all_batches(a.val_dataloader()), all_batches(reseeded.val_dataloader()))
    assert not torch.equal(all_batches(a.train_dataloader()), all_batches(reseeded.train_dataloader()))
    worker = AudioDataModule(config.override({"data.num_workers": 1}))
    assert torch.equal(all_batches(a.train_dataloader()), all_batches(worker.train_dataloader()))


def test_musdb_path_env_fallback(musdb_root, monkeypatch):
    monkeypatch.setenv("MUSDB_PATH", str(musdb_root))
    dm = AudioDataModule(musdb_config(None))
    names = {identify(c)[0] for c in all_batches(dm.val_dataloader())}
    assert names == set(VALID_TRACKS)
    monkeypatch.delenv("MUSDB_PATH")
    with pytest.raises(DatasetError, match="MUSDB_PATH"):
        AudioDataModule(musdb_config(None)).setup("fit")


def test_mono_track_is_widened_with_a_warning(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, channels=1, sources=("mixture",))
    write_track(tmp_path, VALID_TRACKS[0], 1, sources=("mixture",))
    mono_file = tmp_path / "train" / TRAIN_TRACKS[0] / "mixture.wav"
    dm = AudioDataModule(musdb_config(tmp_path))
    with pytest.warns(UserWarning, match=f"{mono_file}.*mono"):
        batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 2, SR // 2)
    assert torch.equal(batch[:, 0], batch[:, 1])
    assert torch.all(batch == signature(0, "mixture"))


def test_short_track_is_skipped_with_a_warning(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, sources=("mixture",))
    write_track(tmp_path, TRAIN_TRACKS[1], 1, seconds=0.3, sources=("mixture",))
    with pytest.warns(UserWarning, match=f"skipping {TRAIN_TRACKS[1]}"):
        tracks = list_tracks(tmp_path, "train", ["mixture"], sample_rate=SR, channels=2, min_frames=SR // 2)
    assert [t.name for t in tracks] == [TRAIN_TRACKS[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # long enough for a shorter chunk: no warning, both kept
        kept = list_tracks(tmp_path, "train", ["mixture"], sample_rate=SR, channels=2, min_frames=SR // 4)
    assert len(kept) == 2


def test_missing_root_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-musdb"
    with pytest.raises(DatasetError, match=str(missing)):
        AudioDataModule(musdb_config(missing)).setup("fit")


def test_empty_root_is_an_error_naming_it(tmp_path):
    with pytest.raises(DatasetError, match=f"no usable tracks.*{tmp_path / 'train'}"):
        AudioDataModule(musdb_config(tmp_path)).setup("fit")


def test_split_without_tracks_is_an_error(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, sources=("mixture",))  # no validation track
    with pytest.raises(DatasetError, match="split 'valid'"):
        AudioDataModule(musdb_config(tmp_path)).setup("validate")


def test_corrupt_wav_is_an_error_naming_it(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, sources=("mixture",))
    corrupt = tmp_path / "train" / TRAIN_TRACKS[1] / "mixture.wav"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 20)
    with pytest.raises(DatasetError, match=f"corrupt.*{corrupt}"):
        AudioDataModule(musdb_config(tmp_path)).setup("fit")


def test_wrong_sample_rate_is_an_error_naming_the_file(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, sample_rate=22050, sources=("mixture",))
    wrong = tmp_path / "train" / TRAIN_TRACKS[0] / "mixture.wav"
    with pytest.raises(DatasetError, match=f"{wrong} has sample rate 22050"):
        AudioDataModule(musdb_config(tmp_path)).setup("fit")


def test_missing_requested_stem_is_an_error_naming_it(tmp_path):
    write_track(tmp_path, TRAIN_TRACKS[0], 0, sources=("mixture", "drums"))
    missing = tmp_path / "train" / TRAIN_TRACKS[0] / "vocals.wav"
    with pytest.raises(DatasetError, match=f"missing vocals file {missing}"):
        AudioDataModule(musdb_config(tmp_path, {"data.sources": ["vocals"]})).setup("fit")


# ---- the .stem.mp4 format, converted once to a wav cache ----------------------------------------

STEM_FREQUENCIES = {"mixture": 220.0, "drums": 330.0, "bass": 110.0, "other": 550.0, "vocals": 880.0}


def write_stem_file(path: Path, seconds: float = 2.0) -> None:
    import stempeg

    t = np.arange(int(seconds * SR)) / SR
    stems = np.stack([
        np.stack([0.3 * np.sin(2 * np.pi * STEM_FREQUENCIES[name] * t)] * 2, axis=1) for name in STEM_NAMES
    ]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    stempeg.write_stems(str(path), stems, sample_rate=SR, writer=stempeg.StreamsWriter(codec="aac"))


def dominant_frequency(chunk: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(chunk.numpy().mean(0)))
    return float(np.fft.rfftfreq(chunk.shape[1], 1 / SR)[spectrum.argmax()])


def test_stem_format_is_converted_once_to_a_wav_cache(tmp_path):
    root = tmp_path / "musdb18"
    for name in (TRAIN_TRACKS[0], VALID_TRACKS[0]):
        write_stem_file(root / "train" / f"{name}.stem.mp4")
    config = musdb_config(root, {"data.format": "stem", "data.sources": ["bass"], "data.val_chunks": 2})
    dm = AudioDataModule(config)
    dm.prepare_data()
    cache = tmp_path / "musdb18-wav"  # default: beside the root
    cached = cache / "train" / TRAIN_TRACKS[0] / "bass.wav"
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted(f"{s}.wav" for s in STEM_NAMES)
    written = cached.stat().st_mtime_ns
    for chunk in torch.cat([next(iter(dm.train_dataloader())), all_batches(dm.val_dataloader())]):
        assert abs(dominant_frequency(chunk) - STEM_FREQUENCIES["bass"]) < 5
    assert convert_stems_to_wav(root, cache) == []  # second call: nothing left to convert
    assert cached.stat().st_mtime_ns == written
    assert not any((cache / ".partial").iterdir())


def test_stem_format_honours_cache_dir(tmp_path):
    root = tmp_path / "musdb18"
    write_stem_file(root / "train" / f"{TRAIN_TRACKS[0]}.stem.mp4", seconds=1.0)
    cache = tmp_path / "elsewhere"
    assert convert_stems_to_wav(root, cache) == [TRAIN_TRACKS[0]]
    vocals, rate = sf.read(cache / "train" / TRAIN_TRACKS[0] / "vocals.wav")
    assert rate == SR and vocals.shape[1] == 2
    assert abs(dominant_frequency(torch.from_numpy(vocals.T[:, : SR // 2].copy())) - 880) < 5
    with pytest.raises(DatasetError, match=str(tmp_path / "empty" / "train")):
        convert_stems_to_wav((tmp_path / "empty"), cache)


# ---- adding a data source: one file + one registry line, nothing else ---------------------------

TOY_SOURCE = """
import torch
from pydantic import Field
from torch.utils.data import Dataset

from vae.config_base import Section
from vae.data.registry import DATA_SOURCES
from vae.data.source import DataSource


class ToneConfig(Section):
    level: float = Field(0.5, gt=0, le=1)


class Constant(Dataset):
    def __init__(self, count, value, channels, frames):
        self.count, self.value, self.shape = count, value, (channels, frames)

    def __len__(self):
        return self.count

    def __getitem__(self, key):
        return torch.full(self.shape, self.value)


class ToneSource(DataSource):
    config_section = ToneConfig

    def dataset(self, split, count):
        return Constant(count, self.section.level, self.chunk.channels, self.chunk.frames)


DATA_SOURCES["tone"] = ToneSource  # the registry line; the schema is read after it

from vae.config import ConfigError, VAEConfig
from vae.data.datamodule import AudioDataModule

config = VAEConfig().override({"data.source": "tone", "data.tone.level": 0.25, "data.batch_size": 3,
                               "data.chunk_seconds": 0.01, "data.val_chunks": 3})
batch = next(iter(AudioDataModule(config).val_dataloader()))
assert batch.shape == (3, 2, 441) and float(batch.max()) == 0.25, batch.shape
try:
    VAEConfig().override({"data.source": "tones"})
except ConfigError as exc:
    assert "'synthetic', 'musdb', 'folder' or 'tone'" in str(exc), str(exc)
else:
    raise AssertionError("an unknown source was accepted")
print("toy source ok")
"""


def test_a_source_added_to_the_registry_is_configurable_and_loads():
    # A fresh interpreter: the registry line runs before the schema is read, as it would in a file.
    proc = subprocess.run([sys.executable, "-c", TOY_SOURCE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "toy source ok" in proc.stdout, proc.stderr


def test_an_unknown_source_is_an_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="data.source: Input should be 'synthetic', 'musdb' or 'folder'"):
        make_config({"data.source": "tape"})
