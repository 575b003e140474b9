"""Score a model on audio files: ``python -m vae.evaluate --model DIR AUDIO_DIR_OR_FILES [--json OUT]``

Every file (wav, flac, ogg, ... anything libsndfile reads; folders are searched recursively) is
resampled to the model's rate, widened to its channels, encoded and decoded (posterior mean) in
chunks, and scored with the training validation's metrics: mel_distance, stft_distance, si_sdr on
segments of the bundle's validation chunk length, and the latent rate kl_kbps. Prints one row per
file and the mean (weighted by duration, as validation weighs its chunks). ``--model`` takes a bundle
folder or an MLflow model URI (models:/NAME@champion, runs:/ID/model)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from vae.export import BundleError
from vae.inference import (DEFAULT_CHUNK_SECONDS, METRIC_NAMES, AudioError, audio_info,
                           evaluate_file, find_audio_files, load_model, mean_metrics)

COLUMNS = ("duration_s", *METRIC_NAMES, "active_units")


def format_table(results: list[dict[str, Any]], mean: dict[str, float]) -> str:
    from tabulate import tabulate

    rows = [[r["file"], *(r[c] for c in COLUMNS)] for r in results]
    total = sum(r["duration_s"] for r in results)
    rows.append(["mean (duration-weighted)", total, *(mean[c] for c in COLUMNS[1:])])
    return tabulate(rows, headers=["file", *COLUMNS], floatfmt=".4f", tablefmt="github")


def evaluate(model: str, inputs: list[str], chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
             segment_seconds: float | None = None, device: str = "cpu",
             tracking_uri: str | None = None, progress: Any = None) -> dict[str, Any]:
    """Raises AudioError / BundleError for bad input, before any file is processed where it can."""
    files = find_audio_files(inputs)
    bundle = load_model(model, device, tracking_uri)
    for file in files:
        audio_info(file, bundle.config.model.audio_channels)
    segment = round(segment_seconds * bundle.config.model.sample_rate) if segment_seconds else None
    results = []
    for file in files:
        results.append(evaluate_file(bundle, file, chunk_seconds, segment))
        if progress:
            progress(results[-1])
    return {"model": model, "bundle": str(bundle.path), "provenance": bundle.provenance,
            "sample_rate": bundle.config.model.sample_rate, "files": results,
            "mean": mean_metrics(results)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae.evaluate", description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files or folders")
    parser.add_argument("--model", required=True, help="bundle folder or MLflow model URI")
    parser.add_argument("--json", metavar="OUT", help="also write the results here as JSON")
    parser.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help="audio per model call (memory bound; default %(default)s)")
    parser.add_argument("--segment-seconds", type=float,
                        help="metric segment (default: the bundle's data.chunk_seconds)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ "
                        "(default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.model, args.inputs, args.chunk_seconds, args.segment_seconds,
                          args.device, args.tracking_uri)
    except (AudioError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report["files"], report["mean"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_json_safe(report), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
