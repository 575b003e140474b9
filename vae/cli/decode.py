"""Decode latents to audio: ``vae-decode IN.npz [IN ...] [--model MODEL] -o OUT``

IN is a latent file written by ``vae-encode`` or a folder of them. OUT is an audio file (format
from its extension: .wav, .flac, .ogg, ...) for a single input file, else a folder receiving one
file per input (``--format``, default wav). The audio is written at the source file's sample rate
(``--sample-rate model`` keeps the model's; a number picks one), trimmed to the source's length,
with the model's channels. ``--model`` defaults to the model recorded in the latent file, followed
only when it is an absolute bundle folder, or a models:/ or runs:/ URI and you name your tracking
store (--tracking-uri or $MLFLOW_TRACKING_URI); a URL recorded in a file is refused, never
fetched. Decoding with a model other than the one that encoded is refused unless
``--allow-other-model``. The model's algorithmic latency and receptive field are printed on
stderr at the end.

``--stream`` (causal models, model.causal true) decodes through the streaming decoder, blocks of
--chunk-seconds each decoded as it would arrive, with no lookahead; the audio equals the one
without --stream up to float rounding (1e-5). ``-o -`` writes one input to stdout, by default as
au (``--format``): a pipe takes au (lossless, its length left open; read by sox, ffmpeg and
``vae-encode --stream -``), ogg or mp3, but not wav or flac, which libsndfile writes only where it
can seek back to the header (stdout redirected to a file)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser, exits_on_user_error, fail,
                            run, writable_problem)
from vae.inference import (DEFAULT_CHUNK_SECONDS, MAX_SAMPLE_RATE, Bundle, Latents,
                           decode_to_file, find_latent_files, is_stdio,
                           load_model, require_causal, timing_line)

STDOUT_FORMAT = "au"  # the lossless format libsndfile writes to a pipe (see the docstring)

RATE_CHOICES = ("original", "model")


def sample_rate_choice(value: str) -> str:
    """``--sample-rate``: 'original', 'model' or a positive integer (Hz)."""
    if value in RATE_CHOICES or value.isdigit() and 0 < int(value) <= MAX_SAMPLE_RATE:
        return value
    raise argparse.ArgumentTypeError(f"must be 'original', 'model' or a rate in Hz up to "
                                     f"{MAX_SAMPLE_RATE}, got {value!r}")


def output_rate(choice: str, latents: Latents) -> int | None:
    if choice == "model":
        return None
    if choice == "original":
        return latents.metadata.get("source", {}).get("sample_rate")
    return int(choice)


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-decode", __doc__)
    p.add_argument("inputs", nargs="+", metavar="IN", help="latent .npz files or folders")
    p.add_argument("--model", help="bundle folder or MLflow model URI (default: the one that "
                   "encoded)")
    add_out(p, "audio file or folder, or - for stdout")
    p.add_argument("--format", help="extension of files written into a folder (default wav), or "
                   f"the format written to stdout (default {STDOUT_FORMAT})")
    p.add_argument("--subtype", help="soundfile subtype, e.g. PCM_24, FLOAT (default: the "
                   "format's default)")
    p.add_argument("--sample-rate", default="original", type=sample_rate_choice,
                   help="'original' (default), 'model', or a rate in Hz")
    p.add_argument("--sample", action="store_true",
                   help="decode a sample of the posterior instead of its mean")
    p.add_argument("--seed", type=int, help="seed of --sample")
    p.add_argument("--allow-other-model", action="store_true",
                   help="decode even if the latents were encoded by other weights")
    p.add_argument("--stream", action="store_true", help="decode through the streaming decoder "
                   "(causal models only)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


def model_of(latents: Latents, file: Path, args: argparse.Namespace) -> str:
    """The model to decode ``file`` with: --model, else the one the file records, where it may
    be followed (Latents.recorded_model: never a URL)."""
    return args.model or latents.recorded_model(str(file), args.tracking_uri)


def load_checked_models(loaded: list[tuple[Path, Latents]], args: argparse.Namespace
                        ) -> dict[str, Bundle]:
    """Every model needed, loaded once, each checked against its latents before any decoding."""
    specs = {file: model_of(latents, file, args) for file, latents in loaded}  # all refusals first
    bundles: dict[str, Bundle] = {}
    for file, latents in loaded:
        spec = specs[file]
        if spec not in bundles:
            if not args.model:
                print(f"model {spec} (recorded in {file}; --model overrides)", file=sys.stderr)
            bundles[spec] = load_model(spec, args.device, args.tracking_uri)
            if args.stream:
                require_causal(bundles[spec], spec)
        latents.check_model(bundles[spec], args.allow_other_model, str(file))
    return bundles


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    files = find_latent_files(args.inputs)
    loaded = [(file, Latents.load(file)) for file in files]
    out, to_stdout = Path(args.out), is_stdio(args.out)
    if to_stdout and len(files) != 1:
        return fail(f"-o -: stdout takes one decoded input, got {len(files)}")
    single = len(args.inputs) == 1 and len(files) == 1 and Path(args.inputs[0]).is_file() \
        and not out.is_dir() and out.suffix
    extension = (args.format or "wav").lstrip(".")
    targets = [out if single else out / f"{file.stem}.{extension}" for file in files]
    problem = None if to_stdout else next(filter(None, (
        writable_problem("-o", folder) for folder in sorted({t.parent for t in targets}))), None)
    if problem:
        return fail(problem)
    bundles = load_checked_models(loaded, args)
    for (file, latents), target in zip(loaded, targets):
        bundle = bundles[model_of(latents, file, args)]
        path, written = decode_to_file(bundle, latents, args.out if to_stdout else target,
                                       sample=args.sample,
                                       out_sample_rate=output_rate(args.sample_rate, latents),
                                       subtype=args.subtype, chunk_seconds=args.chunk_seconds,
                                       seed=args.seed,
                                       format=args.format or STDOUT_FORMAT if to_stdout else None)
        print(f"{file} -> {'stdout' if to_stdout else path}  ({written} samples)",
              file=sys.stderr if to_stdout else sys.stdout)
    for spec, bundle in bundles.items():  # after the work: a refusal stays one line on stderr
        print(timing_line(spec, bundle), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
