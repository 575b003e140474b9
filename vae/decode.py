"""Decode latents to audio: ``python -m vae.decode IN.npz [IN ...] [--model DIR] -o OUT``

IN is a latent file written by ``python -m vae.encode`` or a folder of them. OUT is an audio file
(format from its extension: .wav, .flac, .ogg, ...) for a single input file, else a folder receiving
one file per input (``--format``, default wav). The audio is written at the source file's sample rate
(``--sample-rate model`` keeps the model's; a number picks one), trimmed to the source's length,
with the model's channels. ``--model`` defaults to the model recorded in the latent file; decoding
with a model other than the one that encoded is refused unless ``--allow-other-model``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.export import BundleError
from vae.inference import (DEFAULT_CHUNK_SECONDS, AudioError, LatentFileError, Latents,
                           decode_to_file, load_model)


def find_latent_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.rglob("*.npz"))
            if not found:
                raise LatentFileError(f"{path}: no .npz latent files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise LatentFileError(f"{path}: no such file or folder")
    return files


def output_rate(choice: str, latents: Latents) -> int | None:
    if choice == "model":
        return None
    if choice == "original":
        return latents.metadata.get("source", {}).get("sample_rate")
    return int(choice)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vae.decode", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IN", help="latent .npz files or folders")
    parser.add_argument("--model", help="bundle folder or MLflow model URI (default: the one that "
                        "encoded)")
    parser.add_argument("-o", "--out", required=True, help="audio file or folder")
    parser.add_argument("--format", default="wav", help="extension of files written into a folder")
    parser.add_argument("--subtype", help="soundfile subtype, e.g. PCM_24, FLOAT (default: the "
                        "format's default)")
    parser.add_argument("--sample-rate", default="original",
                        help="'original' (default), 'model', or a rate in Hz")
    parser.add_argument("--sample", action="store_true",
                        help="decode a sample of the posterior instead of its mean")
    parser.add_argument("--seed", type=int, help="seed of --sample")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="decode even if the latents were encoded by other weights")
    parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS)
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ "
                        "(default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sample_rate not in ("original", "model") and not args.sample_rate.isdigit():
        print(f"error: --sample-rate must be 'original', 'model' or an integer, got "
              f"{args.sample_rate!r}", file=sys.stderr)
        return 2
    try:
        files = find_latent_files(args.inputs)
        loaded = [(file, Latents.load(file)) for file in files]
        out = Path(args.out)
        single = len(args.inputs) == 1 and len(files) == 1 and Path(args.inputs[0]).is_file() \
            and not out.is_dir() and out.suffix
        bundles = {}
        for file, latents in loaded:
            spec = args.model or latents.metadata.get("model", {}).get("spec")
            if not spec:
                raise LatentFileError(f"{file}: records no model; pass --model")
            if spec not in bundles:
                bundles[spec] = load_model(spec, args.device, args.tracking_uri)
            latents.check_model(bundles[spec], args.allow_other_model, str(file))
        for file, latents in loaded:
            bundle = bundles[args.model or latents.metadata["model"]["spec"]]
            target = out if single else out / f"{file.stem}.{args.format.lstrip('.')}"
            path, written = decode_to_file(bundle, latents, target, sample=args.sample,
                                           out_sample_rate=output_rate(args.sample_rate, latents),
                                           subtype=args.subtype, chunk_seconds=args.chunk_seconds,
                                           seed=args.seed)
            print(f"{file} -> {path}  ({written} samples)")
    except (AudioError, BundleError, LatentFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
