"""Freed host memory is kept for the next step: big tensors stop page-faulting in each time."""

import platform
import subprocess
import sys

import pytest

from vae.config import load_config

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Allocates and frees a 64 MiB tensor (above glibc's largest mmap threshold) 14 times and prints
# the minor page faults of the last 4 rounds, per round: 64 MiB is 16384 pages of 4 KiB. (The heap
# takes a few rounds to hold a free block that fits, as training takes a few steps.)
FAULTS_PER_ROUND = """
import resource, sys, tempfile, torch
from vae.training.host_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
if sys.argv[1].startswith("train"):  # train one step of a tiny model, configured as told
    from vae.config import load_config
    from vae.training.train import train
    train(load_config(overrides={
        "model.channels": 4, "model.channel_multipliers": [1], "model.strides": [4],
        "model.latent_dim": 2, "data.chunk_seconds": 0.05, "data.batch_size": 1,
        "data.val_chunks": 1, "trainer.max_steps": 1, "trainer.progress_bar": False,
        "tracking.enabled": False, "trainer.out_dir": tempfile.mkdtemp(),
        "trainer.retain_freed_memory": sys.argv[1] == "train-retaining"}), checkpointing=False)
for _ in range(10):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(16 * 2**20)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


def faults_per_round(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


def test_retained_memory_is_reused_without_page_faults():
    assert faults_per_round("default") > 10_000  # glibc as shipped: every page faults again
    assert faults_per_round("retain") < 500


@pytest.mark.slow
def test_training_retains_freed_memory_unless_configured_off():
    assert load_config().trainer.retain_freed_memory is True
    assert faults_per_round("train-retaining") < 500
    assert faults_per_round("train-returning") > 10_000
