"""Score a model on audio files: ``vae-evaluate --model MODEL AUDIO [AUDIO ...] [--json OUT]``

Every file (wav, flac, ogg, ... anything libsndfile reads; folders are searched recursively) is
resampled to the model's rate, widened to its channels, encoded and decoded (posterior mean) in
chunks, and scored with the training validation's metrics (the table in vae/metric_table.py):
mel_distance, stft_distance, si_sdr on segments of the bundle's validation chunk length, the latent
rate kl_kbps and active_units. Prints one row per file and the mean (weighted by duration, as
validation weighs its chunks). MODEL is a bundle folder or an MLflow model URI
(models:/NAME@champion, runs:/ID/model)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vae.cli.common import (add_model_runtime, build_parser, exits_on_user_error, fail, run,
                            writable_problem)
from vae.training.host_memory import unmap_large_blocks

unmap_large_blocks()  # before torch is imported below: flat memory over long files

from vae.inference import DEFAULT_CHUNK_SECONDS, evaluate_files  # noqa: E402
from vae.metric_table import METRICS  # noqa: E402

COLUMNS = ("duration_s", *METRICS)


def format_table(results: list[dict[str, Any]], mean: dict[str, float]) -> str:
    from tabulate import tabulate

    rows = [[r["file"], *(r[c] for c in COLUMNS)] for r in results]
    total = sum(r["duration_s"] for r in results)
    rows.append(["mean (duration-weighted)", total, *(mean[c] for c in COLUMNS[1:])])
    # An undefined figure (SI-SDR of a silent file) reads n/a; means already leave it out.
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows]
    return tabulate(rows, headers=["file", *COLUMNS], floatfmt=".4f", tablefmt="github",
                    missingval="n/a")


def json_safe(value: Any) -> Any:
    """NaN and inf as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def parser() -> argparse.ArgumentParser:
    p = build_parser("vae-evaluate", __doc__)
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files or folders")
    p.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    p.add_argument("--json", metavar="OUT", help="also write the results here as JSON")
    p.add_argument("--segment-seconds", type=float,
                   help="metric segment (default: the bundle's data.chunk_seconds)")
    add_model_runtime(p, DEFAULT_CHUNK_SECONDS)
    return p


@exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problem = args.json and writable_problem("--json", Path(args.json).parent)
    if problem:
        return fail(problem)
    report = evaluate_files(args.model, args.inputs, args.chunk_seconds, args.segment_seconds,
                            args.device, args.tracking_uri)
    print(format_table(report["files"], report["mean"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(report), indent=2, default=str))
    return 0


if __name__ == "__main__":
    run(main)
