"""Turn a training checkpoint into a model bundle: ``vae-export CKPT -o DIR``

The bundle is a folder that loads without pickle and without Lightning: model.safetensors (the
VAE's weights, not the discriminators'), config.yaml (the full resolved config), metrics.json and
provenance.json. Load it with ``vae.inference.load_bundle(DIR)`` or pass DIR as --model to
vae-encode / vae-decode / vae-evaluate. (A sweep's best trial: sweep-export.)"""

from __future__ import annotations

from collections.abc import Sequence

from vae.cli.common import add_out, build_parser, exits_on_user_error, fail, run, writable_problem


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("vae-export", __doc__)
    parser.add_argument("checkpoint", help="a Lightning checkpoint written by vae-train")
    add_out(parser, "bundle folder to write")
    args = parser.parse_args(argv)
    problem = writable_problem("-o", args.out)
    if problem:
        return fail(problem)
    from vae.inference.bundle import bundle_from_checkpoint

    print(bundle_from_checkpoint(args.checkpoint, args.out))
    return 0


if __name__ == "__main__":
    run(main)
