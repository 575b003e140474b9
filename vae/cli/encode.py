"""Encode audio to latents: ``vae-encode IN [IN ...] --model MODEL -o OUT``

IN is an audio file or a folder of them (wav, flac, ogg, ... anything libsndfile reads), resampled
to the model's rate and widened to its channels. OUT is a ``.npz`` file for a single input file, else
a folder receiving one ``.npz`` per input (folder structure kept). Each holds the posterior ``mean``
and ``std`` [latent_dim, frames] and ``metadata`` (JSON: sample rate, hop, length, the source's
rate/channels/format, the model and its provenance). ``vae-decode`` reads them back.
MODEL is a bundle folder or an MLflow model URI (models:/NAME@champion, runs:/ID/model). The
model's algorithmic latency and receptive field are printed on stderr at the end.

``--stream IN -o OUT.npz`` (causal models, model.causal true): IN is read, resampled and encoded
block by block (blocks of --chunk-seconds) through the streaming encoder, in flat memory; ``-``
reads a wav, au, w64 or rf64 stream from stdin (e.g. ``ffmpeg ... -f wav - | vae-encode --stream
- ...``). The latents equal those without --stream up to float rounding (1e-5)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser, exits_on_user_error, fail,
                            run, writable_problem)
from vae.inference import (DEFAULT_CHUNK_SECONDS, AudioError, audio_info, encode_file,
                           encode_file_streaming, find_audio_files, is_stdio, load_model,
                           require_causal, timing_line, weights_fingerprint)


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
    p.add_argument("--stream", action="store_true", help="encode one input (- for stdin) block "
                   "by block through the streaming encoder (causal models only)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


def summary(source: str, out: Path, metadata: dict) -> str:
    return (f"{source} -> {out}  ({metadata['latent_dim']}x{metadata['frames']} latents, "
            f"{metadata['length'] / metadata['sample_rate']:.2f} s, {metadata['kl_kbps']:.3f} kbps)")


def encode_streaming(args: argparse.Namespace) -> int:
    """--stream: one input (a file or stdin) to one latent file."""
    if len(args.inputs) != 1:
        return fail(f"--stream takes one input (an audio file, or - for stdin), got "
                    f"{len(args.inputs)}")
    source, out = args.inputs[0], Path(args.out)
    if not is_stdio(source) and find_audio_files([source]) != [Path(source)]:
        return fail(f"{source}: is a folder; --stream takes one audio file (or - for stdin)")
    if out.is_dir() or out.suffix != ".npz":
        return fail(f"-o {out}: with --stream, name the latent file to write (*.npz)")
    problem = writable_problem("-o", out.parent)
    if problem:
        return fail(problem)
    bundle = load_model(args.model, args.device, args.tracking_uri)
    require_causal(bundle, args.model)
    if not is_stdio(source):  # a file's header is checked before any work
        audio_info(source, bundle.config.model.audio_channels)
    metadata = encode_file_streaming(bundle, source, out, args.chunk_seconds)
    print(summary(metadata["source"]["name"], out, metadata))
    print(timing_line(args.model, bundle), file=sys.stderr)  # last: a refusal stays one line
    return 0


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.stream:
        return encode_streaming(args)
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
        print(summary(str(file), out, latents.metadata))
    print(timing_line(args.model, bundle), file=sys.stderr)  # last: a refusal stays one line
    return 0


if __name__ == "__main__":
    run(main)
