"""Decode latents to audio: ``vae-decode IN.npz [IN ...] [--model MODEL] -o OUT``

IN is a latent file written by ``vae-encode`` or a folder of them. OUT is an audio file (format
from its extension: .wav, .flac, .ogg, ...) for a single input file, else a folder receiving one
file per input (``--format``, default wav). The audio is written at the source file's sample rate
(``--sample-rate model`` keeps the model's; a number picks one), trimmed to the source's length,
with the model's channels. ``--model`` defaults to the model recorded in the latent file; decoding
with a model other than the one that encoded is refused unless ``--allow-other-model``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser,
                            exits_on_user_error, run)
from vae.inference import (DEFAULT_CHUNK_SECONDS, Bundle, LatentFileError, Latents,
                           decode_to_file, find_latent_files, load_model)

RATE_CHOICES = ("original", "model")


def sample_rate_choice(value: str) -> str:
    """``--sample-rate``: 'original', 'model' or a positive integer (Hz)."""
    if value in RATE_CHOICES or value.isdigit() and int(value) > 0:
        return value
    raise argparse.ArgumentTypeError(f"must be 'original', 'model' or a rate in Hz, got {value!r}")


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
    add_out(p, "audio file or folder")
    p.add_argument("--format", default="wav", help="extension of files written into a folder")
    p.add_argument("--subtype", help="soundfile subtype, e.g. PCM_24, FLOAT (default: the "
                   "format's default)")
    p.add_argument("--sample-rate", default="original", type=sample_rate_choice,
                   help="'original' (default), 'model', or a rate in Hz")
    p.add_argument("--sample", action="store_true",
                   help="decode a sample of the posterior instead of its mean")
    p.add_argument("--seed", type=int, help="seed of --sample")
    p.add_argument("--allow-other-model", action="store_true",
                   help="decode even if the latents were encoded by other weights")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


def model_of(latents: Latents, file: Path, model: str | None) -> str:
    """The model to decode ``file`` with: --model, else the one recorded in the file."""
    spec = model or latents.metadata.get("model", {}).get("spec")
    if not spec:
        raise LatentFileError(f"{file}: records no model; pass --model")
    return spec


def load_checked_models(loaded: list[tuple[Path, Latents]], args: argparse.Namespace
                        ) -> dict[str, Bundle]:
    """Every model needed, loaded once, each checked against its latents before any decoding."""
    bundles: dict[str, Bundle] = {}
    for file, latents in loaded:
        spec = model_of(latents, file, args.model)
        if spec not in bundles:
            bundles[spec] = load_model(spec, args.device, args.tracking_uri)
        latents.check_model(bundles[spec], args.allow_other_model, str(file))
    return bundles


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    files = find_latent_files(args.inputs)
    loaded = [(file, Latents.load(file)) for file in files]
    out = Path(args.out)
    single = len(args.inputs) == 1 and len(files) == 1 and Path(args.inputs[0]).is_file() \
        and not out.is_dir() and out.suffix
    bundles = load_checked_models(loaded, args)
    for file, latents in loaded:
        bundle = bundles[model_of(latents, file, args.model)]
        target = out if single else out / f"{file.stem}.{args.format.lstrip('.')}"
        path, written = decode_to_file(bundle, latents, target, sample=args.sample,
                                       out_sample_rate=output_rate(args.sample_rate, latents),
                                       subtype=args.subtype, chunk_seconds=args.chunk_seconds,
                                       seed=args.seed)
        print(f"{file} -> {path}  ({written} samples)")
    return 0


if __name__ == "__main__":
    run(main)
