"""The GPU check runs end to end (tiny, on CPU here) and writes every figure to one file."""

import json
import subprocess
import sys

import pytest

from sweeps.tools.gpu_check import LOADER_WORKERS, PACKED_TRIALS, card_peak


def test_card_peaks_by_name():
    assert card_peak("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.4e12
    assert card_peak("NVIDIA H100 PCIe", "16-mixed") == 756.0e12
    assert card_peak("NVIDIA H200", "32") == 494.7e12
    assert card_peak("NVIDIA A100-SXM4-80GB", "32") == 156.0e12
    assert card_peak("Some Future Card", "bf16-mixed") is None


def test_gpu_check_needs_a_gpu_unless_tiny(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweeps.tools.gpu_check", "-o", str(tmp_path)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_tiny_gpu_check_writes_every_figure(tmp_path):
    subprocess.run([sys.executable, "-m", "sweeps.tools.gpu_check", "--tiny", "-o", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=600)
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(results["precision"]) == {"32", "bf16-mixed"}  # no fp16 autocast on CPU
    for run in results["precision"].values():
        assert run["losses_finite"] and run["steps"] == 12
        assert run["steps_per_s"] > 0 and run["step_flops"] > 0 and 0 < run["mfu_measured"] < 1
    packing = results["packing"]
    assert packing["packed"]["trials"] == PACKED_TRIALS and packing["packed"]["errors"] == 0
    assert packing["packed"]["steps"] == PACKED_TRIALS * packing["alone"]["steps"] > 0
    assert set(results["loader"]["workers"]) == {str(w) for w in LOADER_WORKERS[:2]}
    assert all(w["chunks_per_s"] > 0 for w in results["loader"]["workers"].values())
    ddp = results["ddp"]  # on a CPU: the same path with 2 gloo processes
    assert ddp["accelerator"] == "cpu" and ddp["final_metrics_finite"] is True
    assert ddp["samples_per_s_1"] > 0 and ddp["samples_per_s_2"] > 0
