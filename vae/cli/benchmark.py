"""Where a training step's time goes: ``vae-benchmark [KEY=VALUE ...]``

Prints, for the default config changed by KEY=VALUE overrides (as vae-train takes them), on this
machine: a bare model forward+backward vs a full Lightning training step (goal: <= 1.15x), the
share of the step spent in the losses (goal: <= 20%), and data-loader throughput vs what training
consumes (goal: >= 20x). With --memory: the peak resident memory of vae-evaluate on a 10-second
and a 10-minute file (goal: within +300 MB of each other). With --streaming: streaming encode
and decode of the model with model.causal=true on one CPU thread, in multiples of real time, for
pushes of one hop, 10 ms and 1 s (goal: decode >= 20x), and its latency in ms. With --codec:
vae-compress / vae-decompress speed on one thread, the entropy coding alone and end to end.
Figures, not assertions."""

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
    parser.add_argument("--memory", action="store_true", help="instead: peak memory of "
                        "vae-evaluate on a short and a long file")
    parser.add_argument("--streaming", action="store_true", help="instead: streaming encode and "
                        "decode speed and latency of the causal model, on one thread")
    parser.add_argument("--codec", action="store_true", help="instead: compress and decompress "
                        "speed (.vaec), on one thread")
    parser.add_argument("--seconds", type=float, nargs="+", metavar="S",
                        help="with --memory, other file lengths in seconds")
    args = parser.parse_args(argv)
    if args.seconds and not args.memory:
        parser.error("--seconds goes with --memory")
    if args.memory + args.streaming + args.codec > 1:
        parser.error("--memory, --streaming and --codec are separate benchmarks: pick one")
    if args.seconds and min(args.seconds) <= 0:
        parser.error(f"--seconds: expected lengths > 0, got {min(args.seconds):g}")
    # torch and Lightning: not for --help
    from vae.training.benchmark import run_benchmark, run_memory_benchmark, run_streaming_benchmark

    if args.codec:
        from vae.codec.benchmark import run_codec_benchmark

        run_codec_benchmark(args.overrides)
    elif args.streaming:
        run_streaming_benchmark(args.overrides)
    elif args.memory:
        run_memory_benchmark(args.overrides, args.seconds)
    else:
        run_benchmark(args.overrides, args.repeats)
    return 0


if __name__ == "__main__":
    run(main)
