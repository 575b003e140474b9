"""Audio files in and out: anything libsndfile reads (wav, flac, ogg, aiff, mp3, ...).

Audio is read in blocks, resampled to the model's rate by soxr (a streaming, band-limited
resampler) and mono is widened to stereo (stereo is averaged for a mono model); more channels than
the model takes is an error. Memory does not grow with the file.

``-`` names the standard input (reading) or output (writing). libsndfile reads wav (also the
streaming kind with unknown lengths that ffmpeg and sox write to pipes), au, w64 and rf64 from a
pipe, but writes only au (lossless, its length left open), ogg and mp3 to one: wav and flac
need to seek back to their header, so they reach stdout only when it is redirected to a file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

from vae.audio_files import AUDIO_EXTENSIONS, RESAMPLE_QUALITY, adapt_channels, resample_frames

READ_BLOCK_FRAMES = 65536
MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces and soxr's presets are used at

AudioSource = str | Path | BinaryIO
STDIO = "-"  # as a source: the standard input; as a destination: the standard output


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, unsupported channel count. Names the file."""


def is_stdio(target: AudioSource) -> bool:
    return isinstance(target, str) and target == STDIO


def source_name(source: AudioSource) -> str:
    """What error messages call ``source``: its path, or an uploaded file's name."""
    if is_stdio(source):
        return "stdin"
    return str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "<audio>")


def _open(source: AudioSource) -> sf.SoundFile:
    if is_stdio(source):  # by descriptor: libsndfile reads a pipe itself, without seeking
        source = sys.stdin.buffer.fileno()
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a folder, not an audio file")
    else:
        source.seek(0)
    try:
        return sf.SoundFile(str(source) if isinstance(source, Path) else source,
                            closefd=not isinstance(source, int))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        name = "stdin" if isinstance(source, int) else source_name(source)
        raise AudioError(f"{name}: not readable as audio ({exc})") from exc


@dataclass(frozen=True)
class AudioInfo:
    name: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(source: AudioSource, model_channels: int | None = None) -> AudioInfo:
    """Header of an audio file; raises AudioError if it is unreadable, empty or has more channels
    than ``model_channels`` can take."""
    with _open(source) as f:
        info = AudioInfo(source_name(source), f.samplerate, f.channels, f.frames, f.format,
                         f.subtype)
    if info.frames <= 0:
        raise AudioError(f"{info.name}: contains no audio samples")
    if model_channels is not None:
        _check_channels(info.name, info.channels, model_channels)
    return info


def _check_channels(name: str, channels: int, model_channels: int) -> None:
    if not (channels == model_channels or channels == 1 or (channels == 2 and model_channels == 1)):
        raise AudioError(f"{name}: has {channels} channels; the model takes {model_channels} "
                         "(mono is widened to stereo and stereo averaged for a mono model)")


def _as_block(frames: np.ndarray, channels: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(adapt_channels(frames, channels).T))


def stream_audio(source: AudioSource, sample_rate: int, channels: int,
                 block_frames: int = READ_BLOCK_FRAMES,
                 on_open: Callable[[AudioInfo], None] | None = None) -> Iterator[torch.Tensor]:
    """Blocks ``[channels, n]`` (float32) of the file at ``sample_rate``: read in blocks, resampled
    by a soxr stream and widened, so memory does not grow with the file. ``on_open`` gets the
    header first (a pipe's ``frames`` is 0: unknown)."""
    name = source_name(source)
    with _open(source) as f:
        _check_channels(name, f.channels, channels)
        if on_open is not None:
            on_open(AudioInfo(name, f.samplerate, f.channels, f.frames if f.seekable() else 0,
                              f.format, f.subtype))
        resampler = (soxr.ResampleStream(f.samplerate, sample_rate, f.channels, dtype="float32",
                                         quality=RESAMPLE_QUALITY)
                     if f.samplerate != sample_rate else None)
        try:
            # read() rather than blocks(): blocks() needs a length, which a pipe does not have
            while len(block := f.read(block_frames, dtype="float32", always_2d=True)):
                if resampler is not None:
                    block = resampler.resample_chunk(np.ascontiguousarray(block), last=False)
                if len(block):
                    _check_finite(name, block)
                    yield _as_block(block, channels)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{name}: read error ({exc})") from exc
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, f.channels), dtype=np.float32), last=True)
            if len(tail):
                yield _as_block(tail, channels)


def _check_finite(name: str, block: np.ndarray) -> None:
    # A float file can hold NaN/inf: they would turn every metric into nan and every latent
    # into NaN while the command still exits 0.
    if not np.isfinite(block).all():
        raise AudioError(f"{name}: contains NaN or infinite samples; not usable audio")


def read_audio(source: AudioSource, sample_rate: int, channels: int) -> torch.Tensor:
    """The whole file as ``[channels, samples]`` at ``sample_rate`` (see :func:`stream_audio`)."""
    blocks = list(stream_audio(source, sample_rate, channels))
    if not blocks:
        raise AudioError(f"{source_name(source)}: contains no audio samples")
    return torch.cat(blocks, dim=-1)


def resample(audio: torch.Tensor, in_rate: int, out_rate: int) -> torch.Tensor:
    """``[channels, samples]`` from ``in_rate`` to ``out_rate`` with soxr (HQ)."""
    if in_rate == out_rate:
        return audio
    out = resample_frames(audio.detach().cpu().numpy().T, in_rate, out_rate)
    return torch.from_numpy(np.ascontiguousarray(out.T))


def find_audio_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named, plus the audio files (by extension) anywhere under folders named, sorted per
    folder. Raises AudioError for a missing path or a folder without audio."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise AudioError(f"{path}: no audio files in this folder (looked for "
                                 f"{', '.join(AUDIO_EXTENSIONS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise AudioError(f"{path}: no such file or folder")
    if not files:
        raise AudioError("no audio files given")
    return files


def write_audio(path: str | Path, blocks: Iterable[torch.Tensor], sample_rate: int,
                out_sample_rate: int | None = None, subtype: str | None = None,
                format: str | None = None) -> tuple[Path, int]:
    """Write blocks ``[channels, n]`` at ``sample_rate`` to ``path`` (format from its extension,
    else ``format``; ``-``: the standard output), resampled to ``out_sample_rate`` on the way;
    returns the path and the samples written."""
    to_stdout = is_stdio(path)
    target = sys.stdout.buffer.fileno() if to_stdout else str(path)
    path = Path(path)
    if to_stdout:
        sys.stdout.flush()  # what print() buffered goes before the audio, not into it
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    out_rate = out_sample_rate or sample_rate
    written = 0
    handle = None
    resampler = None
    try:
        for block in blocks:
            data = np.ascontiguousarray(block.numpy().T.astype(np.float32))
            if handle is None:
                try:
                    handle = sf.SoundFile(target, "w", out_rate, data.shape[1], subtype=subtype,
                                          format=format, closefd=not to_stdout)
                except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
                    where = ("stdout (a pipe takes au, ogg or mp3; wav and flac need it "
                             "redirected to a file)") if to_stdout else path
                    raise AudioError(f"{where}: cannot write this format ({exc})") from exc
                if out_rate != sample_rate:
                    resampler = soxr.ResampleStream(sample_rate, out_rate, data.shape[1],
                                                    dtype="float32", quality=RESAMPLE_QUALITY)
            if resampler is not None:
                data = resampler.resample_chunk(data, last=False)
            handle.write(data)
            written += len(data)
        if handle is not None and resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, handle.channels), np.float32), last=True)
            handle.write(tail)
            written += len(tail)
    finally:
        if handle is not None:
            handle.close()
    return path, written
