"""Where a training step's time goes: ``vae-benchmark [KEY=VALUE ...]``

Prints, for the default config changed by KEY=VALUE overrides (as vae-train takes them), on this
machine: a bare model forward+backward vs a full Lightning training step (goal: <= 1.15x), the
share of the step spent in the losses (goal: <= 20%), and data-loader throughput vs what training
consumes (goal: >= 20x). Figures, not assertions."""

from __future__ import annotations

from collections.abc import Sequence

from vae.cli.common import build_parser, exits_on_user_error, run


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("vae-benchmark", __doc__)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. model.channels=16 data.batch_size=4")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each figure "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    from vae.training.benchmark import run_benchmark  # torch and Lightning: not for --help

    run_benchmark(args.overrides, args.repeats)
    return 0


if __name__ == "__main__":
    run(main)
