"""Compress audio to a ``.vaec`` file: ``vae-compress IN --model MODEL -o OUT.vaec``

The model's encoder gives the posterior; its mean is quantised with each latent channel's step
matched to the posterior's noise (``--scale`` 1: steps of sqrt(12) x the channel's mean posterior
std; larger is coarser and cheaper), with subtractive dither (``--dither-seed``, 0 unless given,
``none`` for none: the decoder removes the same uniform offsets, so the error is noise like the
noise the decoder was trained on), and entropy-coded with constriction's range coder under a
Gaussian per channel fitted to each block (``--entropy-model gaussian``) or the VAE's prior
(``prior``). ``--kbps K`` instead picks the finest step whose file is at most K kbit/s (bisection
on the scale). The file holds a header (format version, the model's weights hash, rates, length,
the quantiser) and blocks of ``--block-seconds`` each decodable alone, each with a checksum.
Prints the file's size, its coded bitrate (bytes x 8 / seconds, header included), the ideal
coder's rate and the KL rate; ``vae-decompress`` reads it."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from vae.cli.common import (add_model_runtime, add_out, build_parser, dither_seed,
                            exits_on_user_error, fail, positive_problem, run, writable_problem)
from vae.codec import DEFAULT_BLOCK_SECONDS, ENTROPY_MODELS, compress_file
from vae.codec.anchors import CodecOptions
from vae.inference import DEFAULT_CHUNK_SECONDS, audio_info, load_model


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-compress", __doc__)
    p.add_argument("input", metavar="IN", help="an audio file")
    p.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    add_out(p, "the .vaec file to write")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--scale", type=float, default=1.0,
                      help="quantisation step in units of the noise-matched step (default 1)")
    rate.add_argument("--kbps", type=float, help="the finest step whose file is at most KBPS "
                      "kbit/s (header included)")
    p.add_argument("--entropy-model", choices=ENTROPY_MODELS, default="gaussian")
    p.add_argument("--dither-seed", type=dither_seed, default=CodecOptions.dither_seed,
                   help="subtractive dither from this seed (default %(default)s; 'none': no dither)")
    p.add_argument("--block-seconds", type=float, default=DEFAULT_BLOCK_SECONDS,
                   help="audio per independently decodable block (default %(default)s)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


def option_problem(args: argparse.Namespace) -> str | None:
    problem = positive_problem("--scale", args.scale) or positive_problem("--kbps", args.kbps,
                                                                          "kbit/s")
    if problem:
        return problem
    if not (math.isfinite(args.block_seconds) and 0 < args.block_seconds <= 600):
        return f"--block-seconds {args.block_seconds}: expected a number of seconds in (0, 600]"
    return None


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    problem = option_problem(args) or writable_problem("-o", out.parent)
    if problem:
        return fail(problem)
    if not Path(args.input).is_file():
        return fail(f"{args.input}: no such audio file")
    bundle = load_model(args.model, args.device, args.tracking_uri)
    audio_info(args.input, bundle.config.model.audio_channels)  # its header, before any work
    step = {"kbps": args.kbps} if args.kbps is not None else {"scale": args.scale}
    result = compress_file(bundle, args.input, out, args.chunk_seconds, **step,
                           entropy_model=args.entropy_model, dither_seed=args.dither_seed,
                           block_seconds=args.block_seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run(main)
