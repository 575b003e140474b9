"""Where a training step's time goes (``vae-benchmark [KEY=VALUE ...]``).

Prints, for the given config (default: the default config) on this machine:
- a bare model forward+backward vs a full Lightning training step (goal: ≤ 1.15×),
- the share of the step spent in the losses, forward and backward (goal: ≤ 20%),
- data-loader throughput vs what training consumes (goal: ≥ 20×).
Figures, not assertions: a benchmark, not a test."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from vae.config import VAEConfig, load_config
from vae.data.datamodule import AudioDataModule, build_datamodule, measure_loader_throughput
from vae.training.module import AudioVAEModule
from vae.training.train import build_trainer

DEFAULT_REPEATS = 5


def _median_time(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StepTimer(pl.Callback):
    """Wall time of each training batch (data wait excluded), as Lightning runs it."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self.start)


def benchmark_config(overrides: list[str], repeats: int = DEFAULT_REPEATS) -> VAEConfig:
    """The config to time: no tracking, no progress bar, just enough steps, no validation."""
    return load_config(overrides=["tracking.enabled=false", "trainer.progress_bar=false",
                                  f"trainer.max_steps={repeats + 2}",
                                  "trainer.val_every_steps=1000", *overrides])


def time_step_parts(module: AudioVAEModule, batch: torch.Tensor, repeats: int
                    ) -> tuple[float, float, Callable[[], None]]:
    """(bare forward+backward s, losses forward+backward s, the bare timing function)."""

    def bare() -> None:
        module.model.zero_grad(set_to_none=True)
        out = module.model(batch)
        out.reconstruction.square().mean().backward()

    with torch.no_grad():
        reference = module.model(batch)
    prediction = reference.reconstruction.detach().requires_grad_(True)

    def losses_only() -> None:
        prediction.grad = None
        values = module.reconstruction_loss(prediction, batch, reference.posterior, 1e-4)
        sum(values.values()).backward()

    return _median_time(bare, repeats), _median_time(losses_only, repeats), bare


def time_lightning_step(config: VAEConfig, module: AudioVAEModule,
                        datamodule: AudioDataModule) -> float:
    """Median wall time of a full Lightning training step."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp), callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
    return statistics.median(timer.times[2:])  # the first steps pay one-off kernel setup


def run_benchmark(overrides: list[str], repeats: int = DEFAULT_REPEATS) -> None:
    """Prints the figures of the module docstring for ``overrides`` of the default config."""
    config = benchmark_config(overrides, repeats)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; batch {config.data.batch_size} x {config.data.chunk_seconds} s, "
          f"adversarial={'on' if config.adversarial.enabled else 'off'}")
    datamodule = build_datamodule(config)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = AudioVAEModule(config)
    params = sum(p.numel() for p in module.model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters, hop {config.model.hop_length}")
    bare_s, losses_s, bare = time_step_parts(module, batch, repeats)
    step_s = time_lightning_step(config, module, datamodule)
    # Bare again now that the allocator and kernels are warm; the faster figure is the fair one.
    bare_s = min(bare_s, _median_time(bare, repeats))
    loader_chunks_per_s = measure_loader_throughput(datamodule, batches=10)
    consumed_chunks_per_s = config.data.batch_size / step_s
    print(f"bare forward+backward        {bare_s * 1000:9.1f} ms")
    print(f"full training step           {step_s * 1000:9.1f} ms   ratio {step_s / bare_s:.3f}x (goal <= 1.15x)")
    print(f"losses forward+backward      {losses_s * 1000:9.1f} ms   share of step {losses_s / step_s:.1%} (goal <= 20%)")
    print(f"data loader                  {loader_chunks_per_s:9.1f} chunks/s vs training consumes "
          f"{consumed_chunks_per_s:.2f} chunks/s: {loader_chunks_per_s / consumed_chunks_per_s:.0f}x (goal >= 20x)")
