"""MUSDB18 chunks: tracks listed by the ``musdb`` package, audio read with soundfile.

musdb decodes through an ffmpeg subprocess (~200 ms per 1.5 s chunk); soundfile reads the same
chunk of a wav in ~2 ms. So musdb only defines the dataset (layout, train/valid split) and the
audio comes from the wav files directly. The ``stem`` format (.stem.mp4) is decoded once, through
musdb, into a MUSDB18-HQ-shaped wav cache, and from then on is read exactly like HQ.

Sources: every chunk is drawn from ONE source of ``data.sources``, picked at random per chunk
(``["mixture"]`` = mixtures only; ``["drums", "bass"]`` = half drums, half bass on average).

Randomness is a function of (``data.seed``, draw key), never of worker or process, so a run is
reproducible whatever ``num_workers`` is.

``musdb`` and ``stempeg`` are imported where used: ``import musdb`` fails without ffmpeg on PATH,
and the config schema imports this package's registry.

Listing costs one ffprobe per file (musdb reads each file's metadata): ~15-70 ms per file, so
several seconds for the 500 files of MUSDB18-HQ's train subset, once per data module setup.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import soundfile as sf

from vae.data.errors import DatasetError
from vae.data.settings import STEM_NAMES
from vae.data.source import Split

if TYPE_CHECKING:
    import musdb

STEM_SUFFIX = ".stem.mp4"
TRAIN_STREAM, VALID_STREAM = 0, 1  # keep training draws and the validation plan independent


@dataclass(frozen=True)
class TrackFiles:
    """One usable track: a wav per requested source, all at the model's sample rate."""

    name: str
    files: dict[str, str]  # source name -> wav path
    num_frames: int  # the shortest of the source files, so every source can serve any offset


@dataclass(frozen=True)
class ChunkRef:
    """Where a chunk comes from: a track (index into the track list), a source and a first frame."""

    track: int
    source: str
    start: int


# ---- locating the data -------------------------------------------------------------------------


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``data.root``, else ``$MUSDB_PATH``; an error if neither names an existing folder."""
    if root is None or str(root) == "":
        root = os.environ.get("MUSDB_PATH") or None
        if root is None:
            raise DatasetError("data.root is not set and $MUSDB_PATH is empty: where is MUSDB18?")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"MUSDB18 root {path} does not exist or is not a folder")
    return path


def default_cache_dir(root: Path) -> Path:
    """The wav cache of a .stem.mp4 dataset: a folder beside the root, e.g. musdb18 -> musdb18-wav."""
    return root.parent / f"{root.name}-wav"


def prepare_wav_root(
    root: str | os.PathLike | None, data_format: Literal["wav", "stem"], cache_dir: str | os.PathLike | None
) -> Path:
    """The folder to read HQ-layout wavs from; for ``stem``, converts missing tracks first."""
    resolved = resolve_root(root)
    if data_format == "wav":
        return resolved
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(resolved)
    convert_stems_to_wav(resolved, cache)
    return cache


def convert_stems_to_wav(stem_root: Path, cache_dir: Path) -> list[str]:
    """Decode every ``stem_root/train/*.stem.mp4`` not yet in ``cache_dir/train/<track>/`` to wavs.

    Returns the names converted (empty when the cache is complete). Each track is written to a
    scratch folder and renamed into place, so an interrupted or concurrent conversion (several
    sweep trials on one machine) never leaves a half-written track that looks complete.
    """
    stem_train = stem_root / "train"
    wanted = sorted(p.name[: -len(STEM_SUFFIX)] for p in stem_train.glob(f"*{STEM_SUFFIX}"))
    if not wanted:
        raise DatasetError(f"no *{STEM_SUFFIX} files in {stem_train} (data.format=stem)")
    cache_train = cache_dir / "train"
    missing = {name for name in wanted if not (cache_train / name).is_dir()}
    if not missing:
        return []  # cheap check first: listing through musdb probes every file with ffprobe

    db = _musdb_db(stem_root, split=None, is_wav=False)
    scratch_root = cache_dir / ".partial"
    cache_train.mkdir(parents=True, exist_ok=True)
    scratch_root.mkdir(parents=True, exist_ok=True)
    converted = []
    for track in db.tracks:
        if track.name not in missing:
            continue
        scratch = scratch_root / f"{track.name}.{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        # one stream at a time: a whole 4-minute track as 5 float64 stems would need ~850 MB
        streams = {"mixture": track, **track.sources}
        for name, stream in streams.items():
            try:
                audio = stream.audio  # [frames, channels], decoded by stempeg/ffmpeg
            except Exception as exc:  # ffmpeg errors have no common base class
                raise DatasetError(f"cannot decode the {name} stream of {track.path}: {exc}") from exc
            # the decoder delivers 16-bit samples, so PCM_16 stores them losslessly at half the size
            sf.write(scratch / f"{name}.wav", audio, int(track.rate), subtype="PCM_16")
        try:
            scratch.rename(cache_train / track.name)
        except OSError:  # another process finished this track first
            shutil.rmtree(scratch, ignore_errors=True)
        converted.append(track.name)
    return converted


# ---- listing and checking tracks ---------------------------------------------------------------


def list_tracks(
    root: Path,
    split: Split,
    sources: Sequence[str],
    *,
    sample_rate: int,
    channels: int,
    min_frames: int,
) -> list[TrackFiles]:
    """The tracks of musdb's ``split`` of the train subset under an HQ-layout ``root``.

    Every requested source file must exist, be readable and be at ``sample_rate``; otherwise a
    DatasetError names it. Mono files are allowed (widened on read) with a warning; tracks shorter
    than ``min_frames`` are skipped with a warning.
    """
    db = _musdb_db(root, split=split, is_wav=True)
    tracks = []
    for track in db.tracks:
        files = {source: _source_path(track, source) for source in sources}
        frames = [_check_wav(path, sample_rate, channels) for path in files.values()]
        if min(frames) < min_frames:
            warnings.warn(
                f"skipping {track.name}: {min(frames)} frames in {Path(files[sources[0]]).parent} "
                f"is shorter than one chunk ({min_frames} frames)",
                stacklevel=2,
            )
            continue
        tracks.append(TrackFiles(track.name, files, min(frames)))
    if not tracks:
        raise DatasetError(
            f"no usable tracks for split {split!r} in {root / 'train'} (expected the MUSDB18-HQ "
            f"layout train/<track>/{{{','.join(STEM_NAMES)}}}.wav with musdb's "
            f"{'validation' if split == 'valid' else 'training'} track names, each at least one chunk long)"
        )
    return tracks


def _musdb_db(root: Path, split: Split | None, is_wav: bool) -> musdb.DB:
    import musdb

    try:
        return musdb.DB(root=str(root), is_wav=is_wav, subsets="train", split=split)
    except Exception as exc:  # musdb runs ffprobe on every file; a bad one surfaces here unnamed
        bad = _first_unreadable_file(root / "train", "*.wav" if is_wav else f"*{STEM_SUFFIX}")
        if bad is not None:
            raise DatasetError(f"corrupt or unreadable audio file {bad[0]}: {bad[1]}") from exc
        raise DatasetError(f"musdb could not list {root}: {exc}") from exc


def _first_unreadable_file(folder: Path, pattern: str) -> tuple[Path, str] | None:
    for path in sorted(folder.rglob(pattern)):
        if pattern.endswith(".wav"):
            try:
                frames = sf.info(str(path)).frames
            except Exception as exc:
                return path, str(exc)
            if frames == 0:  # musdb's ffprobe then fails on a missing 'duration_ts', unnamed
                return path, "contains no audio samples (0 frames)"
        else:
            import stempeg

            try:
                stempeg.Info(str(path))
            except Exception as exc:
                return path, str(getattr(exc, "stderr", b"").decode(errors="replace")[-300:] or exc)
    return None


def _source_path(track: musdb.MultiTrack, source: str) -> str:
    if source == "mixture":
        path = track.path
    elif source in (track.sources or {}):
        path = track.sources[source].path
    else:
        path = os.path.join(os.path.dirname(track.path), f"{source}.wav")
    if not os.path.isfile(path):
        raise DatasetError(f"missing {source} file {path} (data.sources asks for {source!r})")
    return path


def _check_wav(path: str, sample_rate: int, channels: int) -> int:
    """Frames in a wav after checking it is readable, at ``sample_rate``, mono or stereo."""
    try:
        info = sf.info(path)
    except Exception as exc:
        raise DatasetError(f"corrupt or unreadable audio file {path}: {exc}") from exc
    if info.samplerate != sample_rate:
        raise DatasetError(
            f"{path} has sample rate {info.samplerate} Hz but model.sample_rate is {sample_rate} Hz"
        )
    if info.channels == 1 and channels == 2:
        warnings.warn(f"{path} is mono; it is duplicated to both channels", stacklevel=3)
    elif info.channels != 2:
        raise DatasetError(f"{path} has {info.channels} channels; expected mono or stereo")
    return int(info.frames)


# ---- reading -----------------------------------------------------------------------------------


def read_chunk(path: str, start: int, frames: int, channels: int) -> np.ndarray:
    """``[channels, frames]`` float32 from a wav: mono is duplicated, stereo averaged for mono models."""
    try:
        audio, _ = sf.read(path, start=start, stop=start + frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise DatasetError(f"cannot read frames {start}..{start + frames} of {path}: {exc}") from exc
    if audio.shape[0] != frames:
        raise DatasetError(f"{path} ended early: frames {start}..{start + frames} gave {audio.shape[0]}")
    if audio.shape[1] != channels:
        audio = np.repeat(audio, channels, axis=1) if audio.shape[1] == 1 else audio.mean(1, keepdims=True)
    return np.ascontiguousarray(audio.T)


def draw_chunk(
    rng: np.random.Generator, tracks: Sequence[TrackFiles], sources: Sequence[str], frames: int,
    track: int | None = None,
) -> ChunkRef:
    """A random source and offset, in track ``track`` or in a random track."""
    if track is None:
        track = int(rng.integers(len(tracks)))
    source = str(sources[rng.integers(len(sources))])
    start = int(rng.integers(0, tracks[track].num_frames - frames + 1))
    return ChunkRef(track, source, start)


def plan_validation_chunks(
    tracks: Sequence[TrackFiles], sources: Sequence[str], frames: int, count: int, seed: int
) -> list[ChunkRef]:
    """A fixed set of ``count`` chunks: the same for the same seed and data, whatever the weights.

    Tracks are visited round-robin in a seeded order so every validation track is covered; chunk i
    depends only on (seed, i), so raising ``count`` keeps the earlier chunks.
    """
    order = np.random.default_rng([seed, VALID_STREAM]).permutation(len(tracks))
    chunks = []
    for i in range(count):
        rng = np.random.default_rng([seed, VALID_STREAM, i])
        chunks.append(draw_chunk(rng, tracks, sources, frames, track=int(order[i % len(order)])))
    return chunks
