"""GPU check, one command on one GPU: ``sweep-gpu-check -o OUT`` (under 8 minutes on an H100).

(a) precision: the default config with adversarial losses on, trained in 32, 16-mixed and
    bf16-mixed for ``--steps`` steps each: steps/s, peak GPU memory, every logged loss finite, and
    both grad scalers (Lightning's for the generator, the discriminators' own) in 16-mixed;
(b) packing: 4 trials with ``gpu: 0.25`` on the one GPU vs 1 trial alone: aggregate steps/s;
(c) MFU: a training step's FLOPs (``torch.utils.flop_counter``) / its time / the card's dense peak
    for that precision (a table by card name), and vs a matmul measured on the card;
(d) data loading: the folder source (FLAC at 48 kHz, resampled) at several ``num_workers`` vs the
    chunks per second a bf16-mixed step consumes;
(e) data-parallel: ``vae-train`` on 2 GPUs vs 1 (sweeps/tools/gpu_check_ddp.py; skipped below 2
    GPUs).
Writes every figure to OUT/gpu_check.json and prints a summary. ``--tiny`` runs the same path with
a tiny model on whatever device there is (how the tests run it on CPU)."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from vae.cli import common

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
PACKED_TRIALS = 4
LOADER_WORKERS = (0, 2, 4, 8)
MATMUL_SIZE = 8192
# Dense (no sparsity) peak TFLOP/s by card name, from NVIDIA's data sheets: "tf32" for fp32
# training (cuDNN convolutions run in TF32 by default), "half" for fp16/bf16 tensor cores.
PEAK_TFLOPS = {"H200": {"tf32": 494.7, "half": 989.4}, "H100 PCIe": {"tf32": 378.0, "half": 756.0},
               "H100": {"tf32": 494.7, "half": 989.4}, "A100": {"tf32": 156.0, "half": 312.0},
               "L40S": {"tf32": 183.0, "half": 366.0}, "A10": {"tf32": 62.5, "half": 125.0},
               "L4": {"tf32": 60.0, "half": 121.0}}
TINY_DISCRIMINATORS = {"adversarial.channels": 4}


def card_peak(name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of the named card for ``precision``; None for a card not in the table."""
    for key, peaks in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100": first match wins
        if key in name:
            return peaks["tf32" if precision == "32" else "half"] * 1e12
    return None


def measured_matmul(device: str, precision: str, size: int) -> float:
    """FLOP/s of a square matmul in the precision's compute dtype on ``device``."""
    import torch

    from vae.training.benchmark import matmul_rate

    dtype = {"32": torch.float32, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[precision]
    return matmul_rate(5, size, device, dtype)


def sync(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def precision_run(overrides: dict[str, Any], precision: str, steps: int, device: str) -> dict[str, Any]:
    """(a) and (c): train ``steps`` steps in ``precision``; time, memory, losses, scalers, FLOPs."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vae.config import load_config
    from vae.data.datamodule import build_datamodule
    from vae.training.module import AudioVAEModule
    from vae.training.train import build_trainer

    flop_step = 3  # counted, not timed: the counter slows the step it watches

    class Probe(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.non_finite: list[str] = []
            self.flops = 0
            self.counter: FlopCounterMode | None = None

        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            sync(torch, device)
            if trainer.global_step == flop_step:
                self.counter = FlopCounterMode(display=False)
                self.counter.__enter__()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            sync(torch, device)
            elapsed = time.perf_counter() - self.start
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
                self.flops, self.counter = self.counter.get_total_flops(), None
            else:
                self.times.append(elapsed)
            for name, value in trainer.callback_metrics.items():
                if name.startswith("train/") and not math.isfinite(float(value)):
                    self.non_finite.append(f"step {trainer.global_step}: {name}")

    config = load_config(overrides={
        "adversarial.enabled": True, "tracking.enabled": False, "trainer.progress_bar": False,
        "trainer.max_steps": steps, "trainer.val_every_steps": steps + 1,
        "trainer.log_every_steps": 1, "trainer.precision": precision,
        "trainer.accelerator": "gpu" if device == "cuda" else "cpu", **overrides})
    pl.seed_everything(0, verbose=False)
    module, datamodule, probe = AudioVAEModule(config), build_datamodule(config), Probe()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp), callbacks=[probe], checkpointing=False)
        trainer.fit(module, datamodule=datamodule)
    step_s = statistics.median(probe.times[5:] or probe.times)  # after cuDNN's autotuning
    generator_scaler = getattr(trainer.precision_plugin, "scaler", None)
    disc_scaler = module.adversarial.grad_scaler if module.adversarial is not None else None
    return {
        "steps": trainer.global_step, "step_s": step_s, "steps_per_s": 1 / step_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "non_finite_losses": probe.non_finite[:10], "losses_finite": not probe.non_finite,
        "generator_grad_scale": generator_scaler.get_scale() if generator_scaler else None,
        "discriminator_grad_scale": (disc_scaler.get_scale()
                                     if disc_scaler is not None and disc_scaler.is_enabled() else None),
        "step_flops": probe.flops, "achieved_tflops": probe.flops / step_s / 1e12,
        "batch_size": config.data.batch_size,
    }


def packing_run(overrides: dict[str, Any], steps: int, gpu: bool) -> dict[str, Any]:
    """(b): the same trial alone and 4 at once on a fraction of the GPU each."""
    import ray

    from sweeps.tools.benchmark import run

    def spec(name: str, trials: int) -> dict[str, Any]:
        return {"name": name, "base": {"overrides": {
                    **overrides, "trainer.max_steps": steps, "trainer.val_every_steps": steps,
                    "tracking.audio_examples": 0}},
                "objective": {"metric": "val/mel_distance", "mode": "min"},
                "searcher": {"sampler": "random", "seed": 0},
                "scheduler": {"type": "none"}, "num_samples": trials,
                "max_concurrent_trials": trials,
                "resources": {"cpu": 2, "gpu": 1 / PACKED_TRIALS if gpu else 0},
                "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}}

    figures: dict[str, Any] = {}
    ray.init(num_cpus=max(2 * PACKED_TRIALS, os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, trials in (("alone", 1), ("packed", PACKED_TRIALS)):
                wall, analysis, _ = run(Path(tmp), spec(f"pack_{label}", trials))
                done = sum(int((t.last_result or {}).get("step", 0)) for t in analysis.trials)
                figures[label] = {"trials": trials, "wall_s": wall, "steps": done,
                                  "aggregate_steps_per_s": done / wall,
                                  "errors": sum(t.status == "ERROR" for t in analysis.trials)}
    finally:
        ray.shutdown()
    figures["packed_vs_alone"] = (figures["packed"]["aggregate_steps_per_s"]
                                  / figures["alone"]["aggregate_steps_per_s"])
    return figures


def write_folder_corpus(root: Path, files: int, seconds: float, rate: int = 48000) -> None:
    """Stereo FLAC files of tones in noise, at a rate the loader must resample."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(files):
        tone = np.sin(2 * np.pi * rng.uniform(80, 2000) * t)[:, None]
        audio = 0.3 * tone + 0.05 * rng.standard_normal((t.size, 2))
        sf.write(root / f"clip_{i:03d}.flac", audio.astype(np.float32), rate)


def loader_run(overrides: dict[str, Any], consumed_chunks_per_s: float, tiny: bool) -> dict[str, Any]:
    """(d): folder-source loader rate per ``num_workers`` vs what training consumes."""
    from vae.config import load_config
    from vae.data.datamodule import build_datamodule, measure_loader_throughput

    figures: dict[str, Any] = {"consumed_chunks_per_s": consumed_chunks_per_s, "workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        write_folder_corpus(Path(tmp), files=6 if tiny else 24, seconds=4 if tiny else 20)
        warnings.filterwarnings("ignore", message=".*resampled to")  # wanted here: 48 kHz files
        for workers in LOADER_WORKERS[:2] if tiny else LOADER_WORKERS:
            config = load_config(overrides={
                **overrides, "data.source": "folder", "data.root": tmp,
                "data.num_workers": workers, "data.folder.listing_cache_dir": f"{tmp}/listing"})
            datamodule = build_datamodule(config)
            datamodule.setup("fit")
            rate = measure_loader_throughput(datamodule, batches=5 if tiny else 30)
            figures["workers"][str(workers)] = {"chunks_per_s": rate,
                                                "headroom": rate / consumed_chunks_per_s}
    return figures


def summary(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device_name']} ({results['device']}), torch {results['torch']}"]
    for precision, run in results["precision"].items():
        mfu = run.get("mfu_table")
        lines.append(
            f"{precision:>10}: {run['steps_per_s']:.2f} steps/s, peak "
            f"{run['peak_memory_gib'] or 0:.1f} GiB, losses finite: {run['losses_finite']}, "
            f"scales gen/disc {run['generator_grad_scale']}/{run['discriminator_grad_scale']}, "
            f"{run['achieved_tflops']:.1f} TFLOP/s = MFU {mfu:.1%} of the card's peak, "
            f"{run['mfu_measured']:.1%} of a measured matmul" if mfu is not None else
            f"{precision:>10}: {run['steps_per_s']:.2f} steps/s, losses finite: "
            f"{run['losses_finite']}, {run['achieved_tflops']:.3f} TFLOP/s "
            f"({run['mfu_measured']:.1%} of a measured matmul)")
    packing = results.get("packing")
    if packing:
        lines.append(f"packing: {PACKED_TRIALS} trials at once give {packing['packed_vs_alone']:.2f}x "
                     f"the steps/s of one alone ({packing['packed']['aggregate_steps_per_s']:.2f} vs "
                     f"{packing['alone']['aggregate_steps_per_s']:.2f}, errors "
                     f"{packing['packed']['errors']})")
    loader = results.get("loader")
    if loader:
        rates = ", ".join(f"{w} workers {v['chunks_per_s']:.0f}/s ({v['headroom']:.1f}x)"
                          for w, v in loader["workers"].items())
        lines.append(f"loader vs {loader['consumed_chunks_per_s']:.1f} chunks/s consumed: {rates}")
    if "ddp" in results:
        from sweeps.tools.gpu_check_ddp import ddp_line

        lines.append(ddp_line(results["ddp"]))
    lines.append(f"total {results['wall_s']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("sweep-gpu-check", __doc__)
    common.add_out(parser, "folder for gpu_check.json")
    parser.add_argument("--steps", type=int, default=200, help="steps per precision (default 200)")
    parser.add_argument("--packing-steps", type=int, default=150, help="steps per packed trial")
    parser.add_argument("--tiny", action="store_true", help="tiny model, fewer steps, any device")
    parser.add_argument("--ddp-steps", type=int, default=100, help="steps of the shorter DDP run")
    parser.add_argument("--skip", nargs="*", default=[], choices=["packing", "loader", "ddp"])
    return parser


@common.exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = common.writable_problem("-o", args.out)
    if problem:  # before a whole run that would have nowhere to go
        return common.fail(problem)
    import torch

    from sweeps.tools.benchmark import TINY
    from vae.config import ConfigError
    from vae.training.train import quiet_lightning

    quiet_lightning()
    began = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.tiny:
        raise ConfigError("no CUDA device: this check is for a GPU (--tiny runs it small anywhere)")
    overrides = {**TINY, **TINY_DISCRIMINATORS} if args.tiny else {}
    # fp16 autocast is CUDA's; a CPU dry run checks the fp32 and bf16 paths.
    precisions = [p for p in PRECISIONS if cuda or p != "16-mixed"]
    results: dict[str, Any] = {
        "device": device, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu", "precision": {}}
    for precision in precisions:
        run = precision_run(overrides, precision, 12 if args.tiny else args.steps, device)
        peak = card_peak(results["device_name"], precision) if cuda else None
        matmul = measured_matmul(device, precision, 512 if args.tiny else MATMUL_SIZE)
        run["mfu_table"] = run["step_flops"] / run["step_s"] / peak if peak else None
        run["mfu_measured"] = run["step_flops"] / run["step_s"] / matmul
        run["matmul_tflops"] = matmul / 1e12
        results["precision"][precision] = run
        print(f"{precision}: {run['steps_per_s']:.2f} steps/s", flush=True)
    if "packing" not in args.skip:
        results["packing"] = packing_run(overrides, 6 if args.tiny else args.packing_steps, cuda)
    if "loader" not in args.skip:
        fastest = results["precision"][precisions[-1]]
        results["loader"] = loader_run(overrides, fastest["batch_size"] * fastest["steps_per_s"],
                                       args.tiny)
    if "ddp" not in args.skip:
        from sweeps.tools.gpu_check_ddp import ddp_run

        results["ddp"] = ddp_run(overrides, 4 if args.tiny else args.ddp_steps,
                                 torch.cuda.device_count(), args.tiny)
    results["wall_s"] = time.perf_counter() - began
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(summary(results))
    return 0


if __name__ == "__main__":
    common.run(main)
