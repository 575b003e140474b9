"""Codecs scored beside the model by ``vae-evaluate``: the .vaec codec (``--codec``) and the
reference codecs ffmpeg runs (``--anchors opus:12,mp3:64``: libopus, libmp3lame).

Each codes the same level-scaled audio the model is scored on (vae/inference/scoring.py's
ScoredFile), its decoded audio is scored with the same metrics, and its rate is the real size of
the file it wrote: ``bytes * 8 / seconds``, headers and container included. ffmpeg runs with a list
argv (no shell) on files in a temporary folder; Opus codes at 48 kHz, so ffmpeg resamples on the
way in and the project's soxr resampler (stream_audio) brings the decoded audio back."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch

from vae.codec.container import CodecError
from vae.codec.entropy import EntropyModel
from vae.codec.files import (coded_kbps, compress_at_kbps, compress_latents,
                             decompress_latents)
from vae.inference.audio_io import stream_audio, write_audio
from vae.inference.latents import posterior_latents
from vae.inference.scoring import Decoding, ScoredFile
from vae.inference.streaming import decode_stream, take
from vae.metric_table import SAMPLED_SUFFIX


@dataclass(frozen=True)
class AnchorCodec:
    encoder: str  # ffmpeg's encoder
    extension: str  # its container
    kbps_range: tuple[float, float]  # what the encoder takes
    sample_rate: int | None = None  # the rate it codes at (None: the model's)


ANCHOR_CODECS = {
    "opus": AnchorCodec("libopus", "opus", (0.5, 512.0), 48000),
    "mp3": AnchorCodec("libmp3lame", "mp3", (8.0, 320.0)),
}
CODEC_PREFIX = "codec/"
ANCHOR_PREFIX = "anchor/"


class AnchorError(CodecError):
    """An --anchors list that cannot be run, or an ffmpeg without its encoders (a CodecError:
    the commands report it as a user error)."""


@dataclass(frozen=True)
class Anchor:
    codec: str
    kbps: float

    @property
    def prefix(self) -> str:
        """Where its figures are reported: ``anchor/opus_12/``."""
        return f"{ANCHOR_PREFIX}{self.codec}_{self.kbps:g}/"


def parse_anchors(text: str) -> list[Anchor]:
    """``opus:6,opus:12,mp3:32`` as Anchors; AnchorError naming the first bad item."""
    anchors: list[Anchor] = []
    for item in text.split(","):
        codec, _, kbps_text = item.strip().partition(":")
        expected = (f"expected CODEC:KBPS with CODEC one of {', '.join(ANCHOR_CODECS)} "
                    "(e.g. opus:12)")
        if codec not in ANCHOR_CODECS:
            raise AnchorError(f"--anchors {item!r}: unknown codec {codec!r}; {expected}")
        try:
            kbps = float(kbps_text)
        except ValueError:
            raise AnchorError(f"--anchors {item!r}: {kbps_text!r} is not a bitrate; "
                              f"{expected}") from None
        low, high = ANCHOR_CODECS[codec].kbps_range
        if not (math.isfinite(kbps) and low <= kbps <= high):
            raise AnchorError(f"--anchors {item!r}: {codec} codes {low:g} to {high:g} kbit/s")
        if Anchor(codec, kbps) in anchors:
            raise AnchorError(f"--anchors {item!r}: given twice")
        anchors.append(Anchor(codec, kbps))
    return anchors


def find_ffmpeg(anchors: Iterable[Anchor], flag: str | None = "--anchors") -> str:
    """The ffmpeg on PATH, checked to have the anchors' encoders; AnchorError if not, naming
    ``flag``, the option that asked for them (None: no option did, e.g. the app)."""
    lead = f"{flag}: " if flag else ""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AnchorError(f"{lead}ffmpeg is not on PATH (.ci/setup installs it)")
    listed = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-encoders"],
                            capture_output=True, text=True, check=False).stdout
    missing = sorted({ANCHOR_CODECS[a.codec].encoder for a in anchors}
                     - set(re.findall(r"^\s*A\S*\s+(\S+)", listed, re.MULTILINE)))
    if missing:
        raise AnchorError(f"{lead}{ffmpeg} was built without {', '.join(missing)}")
    return ffmpeg


def _ffmpeg(ffmpeg: str, source: Path, out: Path, *options: str) -> None:
    done = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
                           "-map_metadata", "-1", *options, str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}) writing {out.name}: "
                           f"{done.stderr.strip()}")


def exactly(blocks: Iterable[torch.Tensor], length: int, channels: int) -> Iterator[torch.Tensor]:
    """The first ``length`` samples of a block stream, silence-padded if it is shorter (a
    codec's decoder may trim a few samples more than its encoder added)."""
    have = 0
    for block in take(blocks, length):
        have += block.shape[-1]
        yield block
    if have < length:
        yield torch.zeros(channels, length - have)


@contextmanager
def anchor_coded(blocks: Iterable[torch.Tensor], sample_rate: int, channels: int, length: int,
                 anchor: Anchor, ffmpeg: str) -> Iterator[tuple[Iterator[torch.Tensor], int]]:
    """Audio blocks (``length`` samples of ``channels`` at ``sample_rate``) coded and decoded by
    ffmpeg's ``anchor`` encoder: the decoded blocks, exactly as long, and the coded file's size
    in bytes. Streamed through files in a temporary folder: memory does not grow with the audio."""
    codec = ANCHOR_CODECS[anchor.codec]
    with TemporaryDirectory(prefix="vae-anchor-") as folder:
        reference, coded = Path(folder, "reference.wav"), Path(folder, f"coded.{codec.extension}")
        decoded = Path(folder, "decoded.wav")
        # float: level-scaled audio may peak above full scale
        write_audio(reference, blocks, sample_rate, subtype="FLOAT")
        rate = ["-ar", str(codec.sample_rate)] if codec.sample_rate else []
        _ffmpeg(ffmpeg, reference, coded, "-c:a", codec.encoder, "-b:a", f"{anchor.kbps * 1000:.0f}",
                *rate)
        _ffmpeg(ffmpeg, coded, decoded, "-c:a", "pcm_f32le")
        yield (exactly(stream_audio(decoded, sample_rate, channels), length, channels),
               coded.stat().st_size)


def anchor_round_trip(audio: torch.Tensor, sample_rate: int, anchor: Anchor,
                      ffmpeg: str) -> tuple[torch.Tensor, int]:
    """``audio`` ``[channels, samples]`` coded and decoded by ffmpeg's ``anchor`` encoder: the
    decoded audio, as long, and the coded file's size in bytes."""
    channels, length = audio.shape
    with anchor_coded([audio], sample_rate, channels, length, anchor, ffmpeg) as (blocks, size):
        return torch.cat(list(blocks), dim=-1), size


@contextmanager
def anchor_decoding(scored: ScoredFile, anchor: Anchor, ffmpeg: str) -> Iterator[Decoding]:
    """``scored``'s level-scaled audio coded and decoded by ffmpeg's ``anchor`` encoder; its
    rate from the coded file's size."""
    cfg = scored.bundle.config.model
    with anchor_coded(scored.reference(), cfg.sample_rate, cfg.audio_channels, scored.length,
                      anchor, ffmpeg) as (blocks, size):
        yield Decoding(anchor.prefix, blocks,
                       {"coded_kbps": coded_kbps(size, scored.length / cfg.sample_rate)})


@dataclass(frozen=True)
class CodecOptions:
    """vae-compress's options, as ``--codec`` runs them (dithered by default: the decoder was
    trained on noisy latents)."""

    scale: float = 1.0
    kbps: float | None = None  # the finest scale within this rate, instead of ``scale``
    entropy_model: EntropyModel = "gaussian"
    dither_seed: int | None = 0


@contextmanager
def codec_decoding(scored: ScoredFile, options: CodecOptions) -> Iterator[Decoding]:
    """``scored``'s posterior written as a .vaec file exactly as vae-compress writes the file
    (same metadata, so the same bytes), read back and decoded; its rate from the file's size."""
    bundle, posterior = scored.bundle, scored.posterior
    latents = posterior_latents(bundle, scored.info, scored.length, posterior.mean.cpu(),
                                posterior.std.cpu(), scored.kl_sum)
    coding: dict[str, Any] = {"entropy_model": options.entropy_model,
                              "dither_seed": options.dither_seed}
    with TemporaryDirectory(prefix="vae-codec-") as folder:
        path = Path(folder, "coded.vaec")
        if options.kbps is not None:
            written = compress_at_kbps(latents, bundle, path, options.kbps, **coding)
        else:
            written = compress_latents(latents, bundle, path, scale=options.scale, **coding)
        latent = decompress_latents(path, bundle).mean.to(posterior.mean.device)
    blocks = take(decode_stream(bundle.model, latent, scored.chunk), scored.length)
    yield Decoding(CODEC_PREFIX, blocks, {"coded_kbps": written["coded_kbps"],
                                          "ideal_kbps": written["ideal_kbps"]})


def codec_ratios(metrics: dict[str, Any]) -> dict[str, float]:
    """The issue's two goals for ``metrics`` holding the codec's figures beside the model's: coded
    rate over the KL rate (goal <= 1.3) and the codec's mel distance over the sampled decoding's
    (goal <= 1.05)."""
    sampled_mel = metrics["mel_distance" + SAMPLED_SUFFIX]
    return {CODEC_PREFIX + "kbps_over_kl": _ratio(metrics[CODEC_PREFIX + "coded_kbps"],
                                                   metrics["kl_kbps"]),
            CODEC_PREFIX + "mel_over_sampled": _ratio(metrics[CODEC_PREFIX + "mel_distance"],
                                                       sampled_mel)}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")
