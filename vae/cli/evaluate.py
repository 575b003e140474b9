"""Score a model on audio files: ``vae-evaluate --model MODEL AUDIO [AUDIO ...] [--json OUT]``

Every file (wav, flac, ogg, ... anything libsndfile reads; folders are searched recursively) is
resampled to the model's rate, widened to its channels, encoded and decoded (posterior mean) in
chunks, and scored with the training validation's metrics (the table in vae/metric_table.py):
mel_distance, stft_distance, si_sdr on segments of the bundle's validation chunk length, the latent
rate kl_kbps and active_units. Prints one row per file and the mean (weighted by duration, as
validation weighs its chunks). MODEL is a bundle folder or an MLflow model URI
(models:/NAME@champion, runs:/ID/model).

--codec also writes each file as vae-compress does (default: --codec-scale 1, gaussian entropy
model, dither seed 0), decompresses it and scores that audio the same way: codec/coded_kbps (the
file's bytes x 8 / seconds, header included), codec/ideal_kbps, codec/mel_distance, ..., and the
issue's two goals, codec/kbps_over_kl (coded over KL rate, goal <= 1.3) and
codec/mel_over_sampled (codec over sampled-decoding mel distance, goal <= 1.05). --anchors
opus:6,opus:12,mp3:32 codes the same audio with ffmpeg's libopus / libmp3lame at those kbit/s:
anchor/opus_6/coded_kbps (the coded file's real size), anchor/opus_6/mel_distance, ...

--visqol adds ViSQOL v3's MOS-LQO (audio mode, 1 to ~4.7, higher is better; the visqol extra) for
every decoding: visqol_moslqo, visqol_moslqo_sampled, codec/visqol_moslqo,
anchor/opus_6/visqol_moslqo (about 0.7 s of CPU per second of audio and decoding)."""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vae.cli.common import (add_model_runtime, build_parser, dither_seed, exits_on_user_error,
                            fail, positive_problem, run, writable_problem)
from vae.training.host_memory import unmap_large_blocks

unmap_large_blocks()  # before torch is imported below: flat memory over long files

from vae.codec import ENTROPY_MODELS  # noqa: E402
from vae.codec.anchors import (ANCHOR_PREFIX, CODEC_PREFIX, CodecOptions, anchor_decoding,  # noqa: E402
                               codec_decoding, codec_ratios, find_ffmpeg, parse_anchors)
from vae.inference import DEFAULT_CHUNK_SECONDS, evaluate_files  # noqa: E402
from vae.inference.visqol import VISQOL_METRIC, VisqolScorer  # noqa: E402
from vae.metric_table import DISTORTION_NAMES, METRICS, SAMPLED_SUFFIX  # noqa: E402

COLUMNS = ("duration_s", *METRICS)
KL_RATE_GOAL, MEL_GOAL = 1.3, 1.05  # issue 20: coded <= 1.3 x KL rate at <= 5 % more mel distance
VISQOL_MISSING = '--visqol needs the visqol extra: pip install -e ".[visqol]"'


def further_metrics(mean: dict[str, float]) -> tuple[str, ...]:
    """What every decoding was scored with beside the metric table's distortions (--visqol)."""
    return (VISQOL_METRIC,) if VISQOL_METRIC in mean else ()


def undefined_as_missing(rows: list[list[Any]]) -> list[list[Any]]:
    """An undefined figure (SI-SDR of a silent file) as missing: tabulate prints n/a (means
    already leave it out)."""
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]


def format_table(results: list[dict[str, Any]], mean: dict[str, float]) -> str:
    from tabulate import tabulate

    columns = (*COLUMNS, *(name + suffix for name in further_metrics(mean)
                           for suffix in ("", SAMPLED_SUFFIX)))
    rows = [[r["file"], *(r[c] for c in columns)] for r in results]
    total = sum(r["duration_s"] for r in results)
    rows.append(["mean (duration-weighted)", total, *(mean[c] for c in columns[1:])])
    return tabulate(undefined_as_missing(rows), headers=["file", *columns], floatfmt=".4f", tablefmt="github",
                    missingval="n/a")


def decoding_prefixes(mean: dict[str, float]) -> list[str]:
    """The codec's and the anchors' prefixes in the report, in the order they were run."""
    return list(dict.fromkeys(k[:k.rindex("/") + 1] for k in mean
                              if k.startswith((CODEC_PREFIX, ANCHOR_PREFIX))))


def comparison_rows(name: str, metrics: dict[str, Any], prefixes: list[str],
                    scored: Sequence[str]) -> list[list[Any]]:
    """The sampled decoding at the KL rate, then each codec at its coded rate: the ``scored``
    distortions of each."""
    rows = [[name, "model (sampled, KL rate)", metrics["kl_kbps"],
             *(metrics[m + SAMPLED_SUFFIX] for m in scored)]]
    rows += [[name, prefix.rstrip("/"), metrics[prefix + "coded_kbps"],
              *(metrics[prefix + m] for m in scored)] for prefix in prefixes]
    return rows


def format_comparison(results: list[dict[str, Any]], mean: dict[str, float]) -> str:
    from tabulate import tabulate

    prefixes, scored = decoding_prefixes(mean), (*DISTORTION_NAMES, *further_metrics(mean))
    rows = [row for r in results for row in comparison_rows(r["file"], r, prefixes, scored)]
    rows += comparison_rows("mean", mean, prefixes, scored)
    return tabulate(undefined_as_missing(rows), headers=["file", "decoding", "kbps", *scored],
                    floatfmt=".4f", tablefmt="github", missingval="n/a")


def goals_line(mean: dict[str, float]) -> str:
    over_kl, over_sampled = mean[CODEC_PREFIX + "kbps_over_kl"], mean[CODEC_PREFIX + "mel_over_sampled"]
    return (f"codec: coded {mean[CODEC_PREFIX + 'coded_kbps']:.3f} kbit/s = {over_kl:.3f} x the KL "
            f"rate (goal <= {KL_RATE_GOAL}), mel distance {over_sampled:.3f} x the sampled "
            f"decoding's (goal <= {MEL_GOAL})")


def json_safe(value: Any) -> Any:
    """NaN and inf as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-evaluate", __doc__)
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files or folders")
    p.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    p.add_argument("--json", metavar="OUT", help="also write the results here as JSON")
    p.add_argument("--segment-seconds", type=float,
                   help="metric segment (default: the bundle's data.chunk_seconds)")
    codec = p.add_argument_group("codecs scored beside the model")
    codec.add_argument("--codec", action="store_true", help="also compress each file (.vaec), "
                       "decompress it and score that")
    # not given: absent (SUPPRESS), so CodecOptions' defaults hold and "none" can mean no dither
    rate = codec.add_mutually_exclusive_group()
    rate.add_argument("--codec-scale", type=float, default=argparse.SUPPRESS,
                      help="vae-compress --scale (default 1)")
    rate.add_argument("--codec-kbps", type=float, default=argparse.SUPPRESS,
                      help="vae-compress --kbps")
    codec.add_argument("--codec-entropy-model", choices=ENTROPY_MODELS, default=argparse.SUPPRESS,
                       help="vae-compress --entropy-model (default gaussian)")
    codec.add_argument("--codec-dither-seed", type=dither_seed, default=argparse.SUPPRESS,
                       help="vae-compress --dither-seed (default 0; 'none': no dither)")
    codec.add_argument("--anchors", metavar="CODEC:KBPS,...", help="reference codecs run by "
                       "ffmpeg on the same audio, e.g. opus:6,opus:12,opus:24,mp3:32,mp3:64")
    p.add_argument("--visqol", action="store_true", help="also score every decoding with ViSQOL "
                   "v3 (audio mode MOS-LQO; needs the visqol extra; ~0.7 s CPU per audio second)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


CODEC_FLAGS = {"codec_scale": "scale", "codec_kbps": "kbps", "codec_entropy_model": "entropy_model",
               "codec_dither_seed": "dither_seed"}  # flag -> CodecOptions field


def codec_options(args: argparse.Namespace) -> CodecOptions:
    """vae-compress's options from the --codec-* flags given (CodecOptions' defaults for the
    rest); ValueError naming a bad one."""
    given = {name: getattr(args, name) for name in CODEC_FLAGS if hasattr(args, name)}
    if given and not args.codec:
        raise ValueError(f"--{next(iter(given)).replace('_', '-')}: only with --codec")
    for name in ("codec_scale", "codec_kbps"):
        problem = positive_problem(f"--{name.replace('_', '-')}", given.get(name))
        if problem:
            raise ValueError(problem)
    return CodecOptions(**{CODEC_FLAGS[name]: value for name, value in given.items()})


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problem = args.json and writable_problem("--json", Path(args.json).parent)
    if problem:
        return fail(problem)
    try:
        options = codec_options(args)
    except ValueError as exc:
        return fail(str(exc))
    extras = [functools.partial(codec_decoding, options=options)] if args.codec else []
    if args.anchors:  # AnchorError (a user error) before any work
        anchors = parse_anchors(args.anchors)
        ffmpeg = find_ffmpeg(anchors)
        extras += [functools.partial(anchor_decoding, anchor=a, ffmpeg=ffmpeg) for a in anchors]
    if args.visqol:
        try:
            import visqol  # noqa: F401  (the extra: checked before any work)
        except ImportError:
            return fail(VISQOL_MISSING)
    report = evaluate_files(args.model, args.inputs, args.chunk_seconds, args.segment_seconds,
                            args.device, args.tracking_uri, extras=extras,
                            scorers=[VisqolScorer] if args.visqol else [])
    if args.codec:
        for metrics in (*report["files"], report["mean"]):
            metrics.update(codec_ratios(metrics))
    print(format_table(report["files"], report["mean"]))
    if extras:
        print(format_comparison(report["files"], report["mean"]))
    if args.codec:
        print(goals_line(report["mean"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(report), indent=2, default=str))
    return 0


if __name__ == "__main__":
    run(main)
