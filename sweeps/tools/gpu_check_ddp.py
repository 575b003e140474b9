"""The GPU check's data-parallel case (sweeps/tools/gpu_check.py, part e): ``vae-train`` on 2 GPUs
(``trainer.devices=2``: Lightning's processes, NCCL) against 1, the same batch per GPU.

Each setting trains twice, for S and for 2·S steps, so that the difference of the two wall
times is the time of S steps without start-up: samples/s = S · batch · devices / that time.
It also checks the 2-GPU run ended with finite validation metrics. With fewer than 2 GPUs it is
skipped (said in the figures); ``--tiny`` on a CPU runs the same path with 2 gloo processes."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEVICES = (1, 2)


def train_seconds(overrides: dict[str, Any], steps: int, devices: int, accelerator: str,
                  folder: Path) -> tuple[float, str]:
    """Wall time of one ``vae-train`` run and its output."""
    arguments = [f"{key}={value}".replace(" ", "") for key, value in overrides.items()]
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vae.cli.train", *arguments, f"trainer.devices={devices}",
         f"trainer.accelerator={accelerator}", f"trainer.max_steps={steps}",
         f"trainer.val_every_steps={steps}", "trainer.progress_bar=false", "tracking.enabled=false",
         "-o", str(folder)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"vae-train trainer.devices={devices} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began, done.stdout


def final_metrics_finite(output: str) -> bool:
    """Whether every row of vae-train's final table (``val/<name>  <value> ...``) is finite."""
    values = [float(line.split()[1]) for line in output.splitlines() if line.startswith("val/")]
    return bool(values) and all(math.isfinite(v) for v in values)


def ddp_run(overrides: dict[str, Any], steps: int, gpus: int, tiny: bool) -> dict[str, Any]:
    """samples/s on 1 and on 2 devices, the speed-up, and whether the 2-device run's final
    validation is finite; ``{"skipped": why}`` when there are not 2 GPUs (and not --tiny)."""
    if gpus < 2 and not tiny:
        return {"skipped": f"{gpus} GPU(s) on this machine; the data-parallel case needs 2"}
    accelerator = "gpu" if gpus >= 2 else "cpu"
    batch = int(overrides.get("data.batch_size", 8))
    figures: dict[str, Any] = {"accelerator": accelerator, "steps": steps, "batch_per_device": batch}
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as tmp:
        for devices in DEVICES:
            short, _ = train_seconds(overrides, steps, devices, accelerator, Path(tmp))
            long, output = train_seconds(overrides, 2 * steps, devices, accelerator, Path(tmp))
            figures[f"samples_per_s_{devices}"] = steps * batch * devices / max(long - short, 1e-9)
        figures["final_metrics_finite"] = final_metrics_finite(output)
    figures["speedup"] = figures["samples_per_s_2"] / figures["samples_per_s_1"]
    return figures


def ddp_line(figures: dict[str, Any]) -> str:
    if "skipped" in figures:
        return f"data-parallel: skipped ({figures['skipped']})"
    return (f"data-parallel ({figures['accelerator']}): {figures['samples_per_s_1']:.1f} samples/s "
            f"on 1 device, {figures['samples_per_s_2']:.1f} on 2: {figures['speedup']:.2f}x; "
            f"final metrics finite: {figures['final_metrics_finite']}")
