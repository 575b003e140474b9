"""Inference on audio files: load a model, read audio, chunked encode/decode, score reconstructions.

Shared by ``python -m vae.encode`` / ``vae.decode`` / ``vae.evaluate`` and the Streamlit app.

* A model is an exported bundle folder (``vae.export``) or an MLflow model URI
  (``models:/NAME@champion``, ``runs:/ID/model``); :func:`load_model` takes either.
* Audio is anything libsndfile reads (wav, flac, ogg, aiff, mp3, ...). It is read in blocks,
  resampled to the model's rate by soxr (a streaming, band-limited resampler) and mono is widened to
  stereo (stereo is averaged for a mono model); more channels than the model takes is an error.
* The model is fully convolutional, so long signals are processed in chunks with enough context on
  both sides to cover the receptive field, keeping only the central part of each chunk: encoding
  keeps the central latent frames of hop-aligned audio chunks, decoding keeps the central samples of
  latent chunks. The result equals whole-signal processing up to float rounding (no seams), and
  memory is bounded by the chunk size, not the file length.
* Metrics are ``vae.metrics``' (the training validation's): mel_distance, stft_distance and si_sdr
  on consecutive segments of the bundle's ``data.chunk_seconds`` (the validation chunk length),
  averaged weighted by length, and kl_kbps = Σ_channels mean-over-frames KL × frame_rate / ln 2 /
  1000, as ``val/kl_kbps``. Like validation, the reconstruction decodes the posterior mean.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

from vae.export import WEIGHTS_FILE, Bundle, BundleError, load_bundle
from vae.metrics import active_units, mel_distance, si_sdr, stft_distance
from vae.model import AudioVAE, kl_to_kbps

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".caf", ".w64", ".rf64")
DEFAULT_CHUNK_SECONDS = 10.0
READ_BLOCK_FRAMES = 65536
MIN_SCORE_SAMPLES = 2048  # the largest STFT window of the metrics
SILENCE_POWER = 1e-10  # mean square below which a reference segment is silent (-100 dBFS)
RESAMPLE_QUALITY = "HQ"
LATENT_FORMAT = "vae-latents/1"

AudioSource = str | Path | BinaryIO


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, unsupported channel count. Names the file."""


class LatentFileError(ValueError):
    """A latent file that cannot be read or does not match the model. Names the file."""


# ---- models -------------------------------------------------------------------------------------

def is_model_uri(spec: str | Path) -> bool:
    """An MLflow model URI (models:/, runs:/, or any scheme://) rather than a bundle folder."""
    spec = str(spec)
    return "://" in spec or spec.startswith(("models:", "runs:"))


def load_model(spec: str | Path, device: str | torch.device = "cpu",
               tracking_uri: str | None = None) -> Bundle:
    """A bundle folder, or an MLflow model URI resolved to one (``models:/NAME@alias``,
    ``runs:/ID/model``) through ``tracking_uri`` (default: $MLFLOW_TRACKING_URI)."""
    spec = str(spec)
    if is_model_uri(spec):
        from vae.mlflow_model import resolve_model_dir

        try:
            folder = resolve_model_dir(spec, tracking_uri)
        except Exception as exc:  # MLflow raises its own types for unknown models/aliases/runs
            raise BundleError(f"{spec}: cannot resolve the MLflow model URI: {exc}") from exc
    else:
        folder = Path(spec)
    if not folder.exists():
        raise BundleError(f"{spec}: no such bundle folder")
    bundle = load_bundle(folder, device)
    bundle.spec = spec if is_model_uri(spec) else str(folder.resolve())  # what encode records
    return bundle


def model_spec(bundle: Bundle) -> str:
    """How to load ``bundle`` again: the MLflow URI it came from, or its absolute folder."""
    return getattr(bundle, "spec", None) or str(Path(bundle.path).resolve())


def weights_fingerprint(bundle: Bundle) -> str | None:
    """sha256 of the bundle's weights file: which exact model encoded a latent file."""
    file = Path(bundle.path) / WEIGHTS_FILE
    if not file.is_file():
        return None
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_summary(bundle: Bundle) -> dict[str, Any]:
    cfg = bundle.config.model
    return {"sample_rate": cfg.sample_rate, "audio_channels": cfg.audio_channels,
            "hop_length": cfg.hop_length, "frame_rate": cfg.sample_rate / cfg.hop_length,
            "latent_dim": cfg.latent_dim}


# ---- audio in -----------------------------------------------------------------------------------

def _name(source: AudioSource) -> str:
    return str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "<audio>")


def _open(source: AudioSource) -> sf.SoundFile:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a folder, not an audio file")
    else:
        source.seek(0)
    try:
        return sf.SoundFile(source if not isinstance(source, Path) else str(source))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{_name(source)}: not readable as audio ({exc})") from exc


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
        info = AudioInfo(_name(source), f.samplerate, f.channels, f.frames, f.format, f.subtype)
    if info.frames <= 0:
        raise AudioError(f"{info.name}: contains no audio samples")
    if model_channels is not None:
        _check_channels(info.name, info.channels, model_channels)
    return info


def _check_channels(name: str, channels: int, model_channels: int) -> None:
    if not (channels == model_channels or channels == 1 or (channels == 2 and model_channels == 1)):
        raise AudioError(f"{name}: has {channels} channels; the model takes {model_channels} "
                         "(mono is widened to stereo and stereo averaged for a mono model)")


def adapt_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """[frames, c] → [frames, channels]: mono duplicated to every channel, or averaged to mono."""
    have = audio.shape[1]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    raise AudioError(f"cannot map {have} channels to {channels}")


def stream_audio(source: AudioSource, sample_rate: int, channels: int,
                 block_frames: int = READ_BLOCK_FRAMES) -> Iterator[torch.Tensor]:
    """Blocks ``[channels, n]`` (float32) of the file at ``sample_rate``: read in blocks, resampled
    by a soxr stream and widened, so memory does not grow with the file."""
    name = _name(source)
    with _open(source) as f:
        _check_channels(name, f.channels, channels)
        resampler = (soxr.ResampleStream(f.samplerate, sample_rate, f.channels, dtype="float32",
                                         quality=RESAMPLE_QUALITY)
                     if f.samplerate != sample_rate else None)
        try:
            for block in f.blocks(block_frames, dtype="float32", always_2d=True):
                if resampler is not None:
                    block = resampler.resample_chunk(np.ascontiguousarray(block), last=False)
                if len(block):
                    yield torch.from_numpy(np.ascontiguousarray(adapt_channels(block, channels).T))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{name}: read error ({exc})") from exc
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros((0, f.channels), dtype=np.float32), last=True)
            if len(tail):
                yield torch.from_numpy(np.ascontiguousarray(adapt_channels(tail, channels).T))


def read_audio(source: AudioSource, sample_rate: int, channels: int) -> torch.Tensor:
    """The whole file as ``[channels, samples]`` at ``sample_rate`` (see :func:`stream_audio`)."""
    blocks = list(stream_audio(source, sample_rate, channels))
    if not blocks:
        raise AudioError(f"{_name(source)}: contains no audio samples")
    return torch.cat(blocks, dim=-1)


def resample(audio: torch.Tensor, in_rate: int, out_rate: int) -> torch.Tensor:
    """``[channels, samples]`` from ``in_rate`` to ``out_rate`` with soxr (HQ)."""
    if in_rate == out_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.detach().cpu().numpy().T), in_rate, out_rate,
                        quality=RESAMPLE_QUALITY)
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


# ---- chunked encode / decode ----------------------------------------------------------------------

def _convs(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            yield m


def encoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of audio context each side of a chunk that cover the encoder's receptive
    field. An upper bound: every conv's span is added as if they were all in series."""
    span, jump = 1, 1
    for conv in _convs(model.encoder):
        span += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return math.ceil(span / model.hop_length) + 1


def decoder_context_frames(model: AudioVAE) -> int:
    """Latent frames of context each side of a chunk that cover the decoder's receptive field."""
    span, scale = 0.0, 1.0  # scale: samples per latent frame at the current layer
    for conv in _convs(model.decoder):
        k, s = conv.kernel_size[0], conv.stride[0]
        if isinstance(conv, torch.nn.ConvTranspose1d):
            span += math.ceil(k / s) / scale  # an output sample sees ceil(k / s) inputs
            scale *= s
        else:
            span += (k - 1) * conv.dilation[0] / scale
            scale /= s
    return math.ceil(span) + 1


def chunk_frames_for(model: AudioVAE, chunk_seconds: float) -> int:
    return max(1, math.ceil(chunk_seconds * model.frame_rate))


@torch.inference_mode()
def encode_stream(model: AudioVAE, blocks: Iterable[torch.Tensor], chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Posterior ``(mean, std)`` chunks ``[latent_dim, ≤chunk_frames]`` of audio arriving in blocks
    ``[channels, n]``, in order; together they are ``model.encode`` of the whole signal (frames
    ``ceil(T / hop)``) up to float rounding."""
    hop = model.hop_length
    context = encoder_context_frames(model) if context_frames is None else context_frames
    device = next(model.parameters()).device
    buffer = torch.zeros(0)
    buffer_start = 0  # sample index of buffer[..., 0]; always a multiple of hop
    frame = 0  # next frame to emit

    def run(start: int, stop: int, keep_stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = buffer[:, start - buffer_start: stop - buffer_start]
        posterior = model.encode(x[None].to(device))
        first = frame - start // hop
        keep = slice(first, first + keep_stop - frame)
        return posterior.mean[0, :, keep].cpu(), posterior.std[0, :, keep].cpu()

    for block in blocks:
        buffer = block if buffer.numel() == 0 else torch.cat([buffer, block], dim=-1)
        while buffer_start + buffer.shape[-1] >= (frame + chunk_frames + context) * hop:
            start = max(0, (frame - context) * hop)
            yield run(start, (frame + chunk_frames + context) * hop, frame + chunk_frames)
            frame += chunk_frames
            drop = max(0, (frame - context) * hop) - buffer_start
            buffer, buffer_start = buffer[:, drop:], buffer_start + drop
    if buffer.numel() == 0:
        return
    total = buffer_start + buffer.shape[-1]
    frames = math.ceil(total / hop)
    padded = frames * hop
    buffer = torch.nn.functional.pad(buffer, (0, padded - total))
    while frame < frames:
        start = max(0, (frame - context) * hop)
        stop_frame = min(frames, frame + chunk_frames)
        yield run(start, min(padded, (frame + chunk_frames + context) * hop), stop_frame)
        frame = stop_frame


@torch.inference_mode()
def decode_stream(model: AudioVAE, latent: torch.Tensor, chunk_frames: int,
                  context_frames: int | None = None) -> Iterator[torch.Tensor]:
    """Audio chunks ``[channels, ≤chunk_frames · hop]`` of ``model.decode(latent)`` for a latent
    ``[latent_dim, frames]``, in order, computed chunk by chunk with latent context."""
    hop = model.hop_length
    context = decoder_context_frames(model) if context_frames is None else context_frames
    device = next(model.parameters()).device
    frames = latent.shape[-1]
    for frame in range(0, frames, chunk_frames):
        stop = min(frames, frame + chunk_frames)
        start, end = max(0, frame - context), min(frames, stop + context)
        audio = model.decode(latent[None, :, start:end].to(device))[0]
        yield audio[:, (frame - start) * hop: (stop - start) * hop].float().cpu()


def encode_audio(model: AudioVAE, audio: torch.Tensor, chunk_seconds: float = DEFAULT_CHUNK_SECONDS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[channels, T]`` → posterior mean and std ``[latent_dim, ceil(T / hop)]``, chunked."""
    parts = list(encode_stream(model, [audio], chunk_frames_for(model, chunk_seconds)))
    if not parts:
        raise ValueError("cannot encode an empty signal")
    return torch.cat([m for m, _ in parts], dim=-1), torch.cat([s for _, s in parts], dim=-1)


def decode_latent(model: AudioVAE, latent: torch.Tensor, length: int | None = None,
                  chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> torch.Tensor:
    """``[latent_dim, frames]`` → ``[channels, length or frames · hop]``, chunked."""
    audio = torch.cat(list(decode_stream(model, latent, chunk_frames_for(model, chunk_seconds))), -1)
    return audio if length is None else audio[:, :length]


def reconstruct(model: AudioVAE, audio: torch.Tensor, chunk_seconds: float = DEFAULT_CHUNK_SECONDS
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction ``[channels, T]`` from the posterior mean, mean, std)."""
    mean, std = encode_audio(model, audio, chunk_seconds)
    return decode_latent(model, mean, audio.shape[-1], chunk_seconds), mean, std


def take(blocks: Iterable[torch.Tensor], length: int) -> Iterator[torch.Tensor]:
    """The first ``length`` samples of a block stream."""
    left = length
    for block in blocks:
        if left <= 0:
            return
        block = block[:, :left]
        left -= block.shape[-1]
        yield block


def rechunk(blocks: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Blocks of exactly ``size`` samples (the last one may be shorter)."""
    pending: list[torch.Tensor] = []
    have = 0
    for block in blocks:
        pending.append(block)
        have += block.shape[-1]
        if have >= size:
            joined = torch.cat(pending, dim=-1)
            cut = (have // size) * size
            yield from joined[:, :cut].split(size, dim=-1)
            pending, have = [joined[:, cut:]], have - cut
    if have:
        yield torch.cat(pending, dim=-1)


# ---- latent files ---------------------------------------------------------------------------------

@dataclass
class Latents:
    mean: torch.Tensor  # [latent_dim, frames]
    std: torch.Tensor  # [latent_dim, frames]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.metadata.get("length", self.mean.shape[-1] * self.metadata.get("hop_length", 1)))

    def save(self, path: str | Path) -> Path:
        """``.npz`` with ``mean``, ``std`` (float32) and ``metadata`` (a JSON string); no pickle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:  # a handle, so numpy does not append .npz to the name
            np.savez(handle, mean=self.mean.float().numpy(), std=self.std.float().numpy(),
                     metadata=np.array(json.dumps(self.metadata, default=str)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Latents:
        path = Path(path)
        if not path.is_file():
            raise LatentFileError(f"{path}: no such latent file")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, std = data["mean"], data["std"]
                metadata = json.loads(str(data["metadata"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise LatentFileError(f"{path}: not a latent file written by vae.encode ({exc})") from exc
        if metadata.get("format") != LATENT_FORMAT or mean.ndim != 2 or mean.shape != std.shape:
            raise LatentFileError(f"{path}: not a {LATENT_FORMAT} latent file")
        return cls(torch.from_numpy(mean), torch.from_numpy(std), metadata)

    def check_model(self, bundle: Bundle, allow_other_weights: bool = False, name: str = "") -> None:
        """Raises LatentFileError if ``bundle`` cannot decode these latents."""
        where = f"{name}: " if name else ""
        model = model_summary(bundle)
        for key in ("latent_dim", "hop_length", "sample_rate", "audio_channels"):
            if key in self.metadata and self.metadata[key] != model[key]:
                raise LatentFileError(f"{where}encoded with {key}={self.metadata[key]}, but the model "
                                      f"{bundle.path} has {key}={model[key]}")
        if self.mean.shape[0] != model["latent_dim"]:
            raise LatentFileError(f"{where}has {self.mean.shape[0]} latent channels, the model "
                                  f"{model['latent_dim']}")
        expected = self.metadata.get("model", {}).get("weights_sha256")
        if expected and not allow_other_weights and expected != weights_fingerprint(bundle):
            raise LatentFileError(
                f"{where}encoded by another model ({self.metadata['model'].get('spec')}, weights "
                f"sha256 {expected[:12]}…) than {bundle.path}; pass the same model, or allow it "
                "explicitly to decode anyway")


def encode_file(bundle: Bundle, source: AudioSource, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                fingerprint: str | None = None) -> Latents:
    """Stream ``source`` through the encoder; the latents and their metadata."""
    cfg = bundle.config.model
    info = audio_info(source, cfg.audio_channels)
    model = bundle.model
    blocks = stream_audio(source, cfg.sample_rate, cfg.audio_channels)
    counter = _Counter(blocks)
    parts = list(encode_stream(model, counter, chunk_frames_for(model, chunk_seconds)))
    if not parts:
        raise AudioError(f"{info.name}: contains no audio samples")
    mean = torch.cat([m for m, _ in parts], dim=-1)
    std = torch.cat([s for _, s in parts], dim=-1)
    metadata = {
        "format": LATENT_FORMAT,
        **model_summary(bundle),
        "length": counter.samples,
        "frames": int(mean.shape[-1]),
        "source": {"name": info.name, "sample_rate": info.sample_rate, "channels": info.channels,
                   "frames": info.frames, "format": info.format, "subtype": info.subtype},
        "model": {"spec": model_spec(bundle),
                  "path": str(bundle.path),
                  "weights_sha256": fingerprint or weights_fingerprint(bundle),
                  "provenance": bundle.provenance},
        "kl_kbps": kl_kbps(mean, std, model.frame_rate),
    }
    return Latents(mean, std, metadata)


class _Counter:
    """Passes blocks through and counts their samples."""

    def __init__(self, blocks: Iterable[torch.Tensor]) -> None:
        self.blocks, self.samples = blocks, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for block in self.blocks:
            self.samples += block.shape[-1]
            yield block


def write_audio(path: str | Path, blocks: Iterable[torch.Tensor], sample_rate: int,
                out_sample_rate: int | None = None, subtype: str | None = None) -> tuple[Path, int]:
    """Write blocks ``[channels, n]`` at ``sample_rate`` to ``path`` (format from its extension),
    resampled to ``out_sample_rate`` on the way; returns the path and the samples written."""
    path = Path(path)
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
                    handle = sf.SoundFile(str(path), "w", out_rate, data.shape[1], subtype=subtype)
                except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
                    raise AudioError(f"{path}: cannot write this format ({exc})") from exc
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


def decode_to_file(bundle: Bundle, latents: Latents, path: str | Path, *, sample: bool = False,
                   out_sample_rate: int | None = None, subtype: str | None = None,
                   chunk_seconds: float = DEFAULT_CHUNK_SECONDS, seed: int | None = None
                   ) -> tuple[Path, int]:
    """Decode (posterior mean, or a sample of it) chunk by chunk into an audio file."""
    latent = latents.mean
    if sample:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        latent = latents.mean + latents.std * torch.randn(latents.std.shape, generator=generator)
    model = bundle.model
    blocks = take(decode_stream(model, latent, chunk_frames_for(model, chunk_seconds)), latents.length)
    return write_audio(path, blocks, bundle.config.model.sample_rate, out_sample_rate, subtype)


# ---- metrics ---------------------------------------------------------------------------------------

def kl_per_channel_sum(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(q || N(0, I)) summed over frames: [latent_dim] (nats)."""
    var = std.double().pow(2)
    return (0.5 * (mean.double().pow(2) + var - 1.0 - torch.log(var))).sum(dim=-1)


def kl_kbps(mean: torch.Tensor, std: torch.Tensor, frame_rate: float) -> float:
    """As val/kl_kbps: per-channel KL averaged over frames, summed over channels, in kbit/s."""
    per_channel = kl_per_channel_sum(mean, std) / mean.shape[-1]
    return kl_to_kbps(float(per_channel.sum()), frame_rate)


class SegmentScorer:
    """Scores (prediction, reference) blocks as training validation scores its chunks: the metrics
    of vae.metrics on consecutive segments of ``segment`` samples (batched like validation batches),
    averaged weighted by length. A short tail is merged into the segment before it. si_sdr skips
    silent reference segments (undefined there) and is NaN when every segment is silent."""

    def __init__(self, sample_rate: int, segment: int, batch: int = 16) -> None:
        self.sample_rate = sample_rate
        self.segment = max(int(segment), MIN_SCORE_SAMPLES)
        self.batch = batch
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._queue: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.totals = {"mel_distance": 0.0, "stft_distance": 0.0, "si_sdr": 0.0}
        self.weights = {"mel_distance": 0, "stft_distance": 0, "si_sdr": 0}
        self.segments = 0

    def _score(self, preds: torch.Tensor, refs: torch.Tensor) -> None:
        """A batch [n, channels, L] of equal-length segments: each metric's batch value is the
        mean over its segments, so it counts n · L samples."""
        n, length = refs.shape[0], refs.shape[-1]
        if length < MIN_SCORE_SAMPLES:
            raise ValueError(f"too short to score: {length} samples at {self.sample_rate} Hz "
                             f"(the metrics need at least {MIN_SCORE_SAMPLES})")
        preds, refs = preds.float(), refs.float()
        self.totals["mel_distance"] += float(mel_distance(preds, refs, self.sample_rate)) * n * length
        self.totals["stft_distance"] += float(stft_distance(preds, refs)) * n * length
        self.weights["mel_distance"] += n * length
        self.weights["stft_distance"] += n * length
        audible = refs.pow(2).mean(dim=(1, 2)) > SILENCE_POWER
        if audible.any():
            count = int(audible.sum())
            self.totals["si_sdr"] += float(si_sdr(preds[audible], refs[audible])) * count * length
            self.weights["si_sdr"] += count * length
        self.segments += n

    def _flush(self) -> None:
        if self._queue:
            self._score(torch.stack([p for p, _ in self._queue]), torch.stack([r for _, r in self._queue]))
            self._queue = []

    def _enqueue(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        if self._queue and self._queue[0][1].shape != ref.shape:
            self._flush()
        self._queue.append((pred, ref))
        if len(self._queue) >= self.batch:
            self._flush()

    def add_segment(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        """One segment of at most ``segment`` samples (as :func:`rechunk` gives)."""
        if pred.shape != ref.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ")
        if self._pending is not None:
            if ref.shape[-1] < self.segment // 2:  # a short tail: merge it into the pending one
                p, r = self._pending
                self._pending = (torch.cat([p, pred], -1), torch.cat([r, ref], -1))
                return
            self._enqueue(*self._pending)
        self._pending = (pred, ref)

    def add(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        """A whole signal pair (any length), segmented here."""
        for p, r in zip(rechunk([pred], self.segment), rechunk([ref], self.segment)):
            self.add_segment(p, r)

    def result(self) -> dict[str, float]:
        if self._pending is not None:
            self._enqueue(*self._pending)
            self._pending = None
        self._flush()
        return {k: (self.totals[k] / self.weights[k] if self.weights[k] else float("nan"))
                for k in self.totals}


def metric_segment_samples(bundle: Bundle) -> int:
    """The validation chunk length of the bundle's config, in samples."""
    return round(bundle.config.data.chunk_seconds * bundle.config.model.sample_rate)


def score(bundle: Bundle, reconstruction: torch.Tensor, reference: torch.Tensor,
          mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
    """The four metrics (and active_units) of an in-memory reconstruction ``[channels, T]``."""
    scorer = SegmentScorer(bundle.config.model.sample_rate, metric_segment_samples(bundle))
    scorer.add(reconstruction, reference)
    kl = kl_per_channel_sum(mean, std) / mean.shape[-1]
    return {**scorer.result(), "kl_kbps": kl_to_kbps(float(kl.sum()), bundle.model.frame_rate),
            "active_units": active_units(kl)}


METRIC_NAMES = ("mel_distance", "stft_distance", "si_sdr", "kl_kbps")


def evaluate_file(bundle: Bundle, source: AudioSource, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                  segment_samples: int | None = None) -> dict[str, Any]:
    """Metrics of one file, in two streaming passes (encode; then decode beside a re-read of the
    input), so memory stays bounded for any length."""
    cfg = bundle.config.model
    model = bundle.model
    info = audio_info(source, cfg.audio_channels)
    chunk = chunk_frames_for(model, chunk_seconds)
    counter = _Counter(stream_audio(source, cfg.sample_rate, cfg.audio_channels))
    kl_sum = torch.zeros(cfg.latent_dim, dtype=torch.float64)
    means = []
    frames = 0
    for mean, std in encode_stream(model, counter, chunk):
        kl_sum += kl_per_channel_sum(mean, std)
        frames += mean.shape[-1]
        means.append(mean)
    if not frames:
        raise AudioError(f"{info.name}: contains no audio samples")
    length = counter.samples
    latent = torch.cat(means, dim=-1)
    segment = segment_samples or metric_segment_samples(bundle)
    scorer = SegmentScorer(cfg.sample_rate, segment)
    predictions = rechunk(take(decode_stream(model, latent, chunk), length), scorer.segment)
    references = rechunk(stream_audio(source, cfg.sample_rate, cfg.audio_channels), scorer.segment)
    try:
        for pred, ref in zip(predictions, references, strict=True):
            scorer.add_segment(pred, ref)
        metrics = scorer.result()
    except ValueError as exc:
        raise AudioError(f"{info.name}: {exc}") from exc
    kl = kl_sum / frames
    return {"file": info.name, "duration_s": length / cfg.sample_rate,
            "input_sample_rate": info.sample_rate, "input_channels": info.channels, **metrics,
            "kl_kbps": kl_to_kbps(float(kl.sum()), model.frame_rate),
            "active_units": active_units(kl),
            "weights": {"mel_distance": scorer.weights["mel_distance"],
                        "stft_distance": scorer.weights["stft_distance"],
                        "si_sdr": scorer.weights["si_sdr"], "kl_kbps": frames,
                        "active_units": frames}}


def mean_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """Across files as validation averages across chunks: weighted by scored samples (frames for
    the latent rate); si_sdr only over non-silent audio."""
    out = {}
    for name in (*METRIC_NAMES, "active_units"):
        pairs = [(r[name], r["weights"][name]) for r in results
                 if r["weights"][name] and not math.isnan(r[name])]
        total = sum(w for _, w in pairs)
        out[name] = sum(v * w for v, w in pairs) / total if total else float("nan")
    return out
