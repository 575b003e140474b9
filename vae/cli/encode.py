"""Encode audio to latents: ``vae-encode IN [IN ...] --model MODEL -o OUT``

IN is an audio file or a folder of them (wav, flac, ogg, ... anything libsndfile reads), resampled
to the model's rate and widened to its channels. OUT is a ``.npz`` file for a single input file, else
a folder receiving one ``.npz`` per input (folder structure kept). Each holds the posterior ``mean``
and ``std`` [latent_dim, frames] and ``metadata`` (JSON: sample rate, hop, length, the source's
rate/channels/format, the model and its provenance). ``vae-decode`` reads them back.
MODEL is a bundle folder or an MLflow model URI (models:/NAME@champion, runs:/ID/model)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser, exits_on_user_error, fail,
                            run, writable_problem)
from vae.inference import (DEFAULT_CHUNK_SECONDS, AudioError, audio_info, encode_file,
                           find_audio_files, load_model, weights_fingerprint)


def output_paths(inputs: list[str], files: list[Path], out: Path) -> list[Path]:
    """Where each input's latents go: OUT itself for one file named as ``*.npz``, else OUT/…"""
    if len(inputs) == 1 and len(files) == 1 and Path(inputs[0]).is_file() and not out.is_dir() \
            and out.suffix:
        return [out]
    roots = [Path(i) for i in inputs]
    paths = []
    for file in files:
        root = next((r for r in roots if r.is_dir() and r in file.parents), None)
        relative = file.relative_to(root) if root else Path(file.name)
        paths.append(out / relative.with_suffix(".npz"))
    if len(set(paths)) != len(paths):
        raise AudioError("two inputs map to the same output name; encode them to separate folders")
    return paths


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-encode", __doc__)
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    p.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    add_out(p, "latent file (.npz) or folder")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    files = find_audio_files(args.inputs)
    outputs = output_paths(args.inputs, files, Path(args.out))
    problem = next(filter(None, (writable_problem("-o", folder)
                                 for folder in sorted({out.parent for out in outputs}))), None)
    if problem:
        return fail(problem)
    bundle = load_model(args.model, args.device, args.tracking_uri)
    for file in files:  # every header checked before any work is done
        audio_info(file, bundle.config.model.audio_channels)
    fingerprint = weights_fingerprint(bundle)
    for file, out in zip(files, outputs):
        latents = encode_file(bundle, file, args.chunk_seconds, fingerprint)
        latents.save(out)
        print(f"{file} -> {out}  ({latents.mean.shape[0]}x{latents.mean.shape[1]} latents, "
              f"{latents.metadata['length'] / latents.metadata['sample_rate']:.2f} s, "
              f"{latents.metadata['kl_kbps']:.3f} kbps)")
    return 0


if __name__ == "__main__":
    run(main)
