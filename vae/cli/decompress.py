"""Decompress a ``.vaec`` file to audio: ``vae-decompress IN.vaec --model MODEL -o OUT.wav``

MODEL must be the model that compressed it (the file holds its weights' hash: other weights are
refused, as they would decode other audio); the file never names where a model is. The audio is
written at the model's rate (``--sample-rate`` picks another), trimmed to the source's length. A
damaged file is refused with its first damaged block named by index, byte offset and time."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser, exits_on_user_error, fail,
                            run, writable_problem)
from vae.codec import decompress_file
from vae.inference import DEFAULT_CHUNK_SECONDS, MAX_SAMPLE_RATE, load_model


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-decompress", __doc__)
    p.add_argument("input", metavar="IN", help="a .vaec file written by vae-compress")
    p.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    add_out(p, "audio file to write (format from its extension)")
    p.add_argument("--sample-rate", type=int, help="write at this rate (default: the model's)")
    p.add_argument("--subtype", help="soundfile subtype, e.g. PCM_24 (default: the format's)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.sample_rate is not None and not 0 < args.sample_rate <= MAX_SAMPLE_RATE:
        return fail(f"--sample-rate {args.sample_rate}: expected 1 to {MAX_SAMPLE_RATE} Hz")
    problem = writable_problem("-o", Path(args.out).parent)
    if problem:
        return fail(problem)
    bundle = load_model(args.model, args.device, args.tracking_uri)
    result = decompress_file(args.input, bundle, args.out, out_sample_rate=args.sample_rate,
                             subtype=args.subtype, chunk_seconds=args.chunk_seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run(main)
