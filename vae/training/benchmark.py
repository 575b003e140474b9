"""Where a training step's time goes (``vae-benchmark [KEY=VALUE ...]``).

Prints, for the given config (default: the default config) on this machine, in one run:
- the CPU's reference rate: a 2048² fp32 matmul on the same threads;
- the bare model forward+backward: its FLOPs (``torch.utils.flop_counter``), its rate and that
  rate as a share of the matmul's (goal: >= 50%), and from the profiler, the share of backward
  convolutions and how many times the forward convolutions they cost (about 2× is normal),
  activations, weight norm, and minor page faults per step;
- a full Lightning training step vs the bare model (goal: <= 1.15x) and the losses' share;
- data-loader throughput vs what training consumes (goal: >= 20x).
With ``--memory`` instead: the peak resident memory of ``vae-evaluate`` (each run in a process of
its own) on a 10-second and a 10-minute file, for an untrained model of the config (goal: the
long file within +300 MB of the short one, as evaluation streams files).
With ``--streaming`` instead: streaming encode and decode of the config with model.causal=true on
ONE thread, in multiples of real time, for pushes of one hop, 10 ms and 1 s (goal: decode >= 20x),
and the model's latency and receptive field.
Figures, not assertions: a benchmark, not a test."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from vae.config import VAEConfig, load_config
from vae.data.datamodule import (
    AudioDataModule,
    build_datamodule,
    measure_loader_throughput,
)
from vae.inference import describe_timing, model_facts, save_bundle
from vae.model import AudioVAE
from vae.model.streaming import StreamingDecoder, StreamingEncoder
from vae.training.host_memory import retain_freed_memory
from vae.training.module import AudioVAEModule
from vae.training.train import build_trainer

DEFAULT_REPEATS = 5
MEMORY_SECONDS = (10.0, 600.0)  # the file lengths evaluated by --memory
MEMORY_GOAL_MB = 300  # the long file's peak over the short one's
MATMUL_SIZE = 2048
STREAM_SECONDS = 3.0  # audio streamed per figure: short to run, long enough to time
STREAM_GOAL = 20  # decode, multiples of real time on one thread
# Profiler op names, grouped as the figures report them.
CONV_FORWARD_OPS = ("aten::mkldnn_convolution", "aten::slow_conv_dilated2d", "aten::thnn_conv2d",
                    "aten::_slow_conv2d_forward", "aten::cudnn_convolution",
                    "aten::cudnn_convolution_transpose", "aten::slow_conv_transpose2d")
CONV_BACKWARD_OPS = ("aten::convolution_backward",)
ACTIVATION_OPS = ("aten::elu", "aten::elu_", "aten::elu_backward", "aten::sin", "aten::pow",
                  "aten::sin_backward", "aten::pow_backward")
WEIGHT_NORM_OPS = ("aten::_weight_norm_interface", "aten::_weight_norm_interface_backward")


def _median_time(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class StepTimer(pl.Callback):
    """Wall time and minor page faults of each training batch (data wait excluded), as Lightning
    runs it."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.faults: list[int] = []

    def on_train_batch_start(self, *args) -> None:
        self.start, self.start_faults = time.perf_counter(), minor_faults()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self.start)
        self.faults.append(minor_faults() - self.start_faults)


def benchmark_config(overrides: list[str], repeats: int = DEFAULT_REPEATS) -> VAEConfig:
    """The config to time: no tracking, no progress bar, just enough steps, no validation."""
    return load_config(overrides=["tracking.enabled=false", "trainer.progress_bar=false",
                                  f"trainer.max_steps={repeats + 2}",
                                  "trainer.val_every_steps=1000", *overrides])


def matmul_rate(repeats: int, size: int = MATMUL_SIZE, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square matmul in ``dtype`` on ``device`` (on CPU, this process's threads): what
    the hardware does on the best-shaped work, the reference a model's rate is compared with."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def multiply() -> None:
        torch.mm(a, b)
        if a.is_cuda:  # time the work, not its launch
            torch.cuda.synchronize()

    return 2 * size**3 / _median_time(multiply, 2 * repeats, warmup=3)


def step_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def minor_faults_per_call(fn: Callable[[], None], calls: int = 2) -> float:
    before = minor_faults()
    for _ in range(calls):
        fn()
    return (minor_faults() - before) / calls


def profile_shares(fn: Callable[[], None]) -> dict[str, float]:
    """Shares of one call's profiled self time, by op group."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    self_us = {event.key: event.self_cpu_time_total for event in prof.key_averages()}
    total = sum(self_us.values())

    def share(ops: tuple[str, ...]) -> float:
        return sum(self_us.get(op, 0.0) for op in ops) / total

    return {"conv_backward": share(CONV_BACKWARD_OPS), "conv_forward": share(CONV_FORWARD_OPS),
            "activations": share(ACTIVATION_OPS), "weight_norm": share(WEIGHT_NORM_OPS)}


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
                        datamodule: AudioDataModule) -> tuple[float, float]:
    """Median wall time and minor page faults of a full Lightning training step."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp), callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
    # the first steps pay one-off kernel setup
    return statistics.median(timer.times[2:]), statistics.median(timer.faults[2:])


def run_benchmark(overrides: list[str], repeats: int = DEFAULT_REPEATS) -> None:
    """Prints the figures of the module docstring for ``overrides`` of the default config."""
    config = benchmark_config(overrides, repeats)
    retained = config.trainer.retain_freed_memory and retain_freed_memory()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; batch {config.data.batch_size} x {config.data.chunk_seconds} s, "
          f"adversarial={'on' if config.adversarial.enabled else 'off'}, freed host memory "
          f"{'retained' if retained else 'returned to the OS'}")
    reference = matmul_rate(repeats) / 1e9
    datamodule = build_datamodule(config)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = AudioVAEModule(config)
    params = sum(p.numel() for p in module.model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters, hop {config.model.hop_length}")
    bare_s, losses_s, bare = time_step_parts(module, batch, repeats)
    step_s, step_faults = time_lightning_step(config, module, datamodule)
    # Bare again now that the allocator and kernels are warm; the faster figure is the fair one.
    bare_s = min(bare_s, _median_time(bare, repeats))
    flops = step_flops(bare)
    shares = profile_shares(bare)
    faults = minor_faults_per_call(bare)
    loader_chunks_per_s = measure_loader_throughput(datamodule, batches=10)
    consumed_chunks_per_s = config.data.batch_size / step_s
    rate = flops / bare_s / 1e9
    print(f"matmul {MATMUL_SIZE}x{MATMUL_SIZE} fp32       {reference:9.1f} GFLOP/s (the CPU's reference rate)")
    print(f"bare forward+backward        {bare_s * 1000:9.1f} ms   {flops / 1e9:.1f} GFLOP, "
          f"{rate:.1f} GFLOP/s = {rate / reference:.0%} of matmul (goal >= 50%)")
    print(f"  convolution backward       {shares['conv_backward']:9.1%} of it, "
          f"{shares['conv_backward'] / max(shares['conv_forward'], 1e-9):.2f}x the forward "
          f"convolutions ({shares['conv_forward']:.1%}; a backward costs about 2x)")
    print(f"  activations, weight norm   {shares['activations']:9.1%}, {shares['weight_norm']:.1%}")
    print(f"  minor page faults          {faults:9.0f} per step")
    print(f"full training step           {step_s * 1000:9.1f} ms   ratio {step_s / bare_s:.3f}x (goal <= 1.15x), "
          f"{step_faults:.0f} minor page faults")
    print(f"losses forward+backward      {losses_s * 1000:9.1f} ms   share of step {losses_s / step_s:.1%} (goal <= 20%)")
    print(f"data loader                  {loader_chunks_per_s:9.1f} chunks/s vs training consumes "
          f"{consumed_chunks_per_s:.2f} chunks/s: {loader_chunks_per_s / consumed_chunks_per_s:.0f}x (goal >= 20x)")


def write_test_audio(path: Path, seconds: float, sample_rate: int, channels: int,
                     block_seconds: float = 10.0) -> Path:
    """A tone per channel plus a little noise, written block by block (16-bit WAV)."""
    rng = np.random.default_rng(0)
    total, block = round(seconds * sample_rate), round(block_seconds * sample_rate)
    with sf.SoundFile(str(path), "w", sample_rate, channels, subtype="PCM_16") as f:
        for start in range(0, total, block):
            t = np.arange(start, min(total, start + block))[:, None] / sample_rate
            tones = 0.3 * np.sin(2 * np.pi * 440.0 * (1 + 0.5 * np.arange(channels)) * t)
            f.write(tones + 0.01 * rng.standard_normal(tones.shape))
    return path


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Peak resident memory (MB) and CPU time (user + system, s) of ``command`` run in a child
    process; its standard output is dropped. Raises CalledProcessError if it fails."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux reports kB


def run_memory_benchmark(overrides: list[str], seconds: Sequence[float] | None = None) -> None:
    """Prints the peak resident memory of ``vae-evaluate`` on files of each length in ``seconds``
    (default: MEMORY_SECONDS) for an untrained model of ``overrides`` of the default config."""
    config = load_config(overrides=overrides)
    rate, channels = config.model.sample_rate, config.model.audio_channels
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="vae-memory-") as folder:
        bundle = save_bundle(AudioVAE(config.model).eval(), config, Path(folder) / "bundle")
        print(f"vae-evaluate of an untrained model ({config.model.channels} channels, latent "
              f"{config.model.latent_dim}), {channels} channel(s) at {rate} Hz; load average "
              f"{os.getloadavg()[0]:.2f}")
        peaks = []
        for length in sorted(seconds or MEMORY_SECONDS):
            audio = write_test_audio(Path(folder) / f"{length:g}s.wav", length, rate, channels)
            peak, cpu = peak_rss_mb([sys.executable, "-m", "vae.cli.evaluate", "--model",
                                     str(bundle), str(audio)])
            peaks.append(peak)
            print(f"{length:8g} s file: peak RSS {peak:8.1f} MB, {cpu:.1f} s of CPU")
    print(f"longest vs shortest: {peaks[-1] - peaks[0]:+.1f} MB (goal <= +{MEMORY_GOAL_MB} MB)")


def stream_push_sizes(hop: int, sample_rate: int) -> dict[str, int]:
    """Push sizes in samples: one hop, 10 ms, 1 s."""
    return {"1 hop": hop, "10 ms": round(0.01 * sample_rate), "1 s": sample_rate}


def time_streaming(model: AudioVAE, audio: torch.Tensor, latent: torch.Tensor, push: int
                   ) -> tuple[float, float]:
    """Seconds to stream-encode ``audio`` and stream-decode ``latent`` in pushes of ``push``
    samples (decode: of the frames those samples make, at least one)."""
    start = time.perf_counter()
    encoder = StreamingEncoder(model)
    for block in audio.split(push, dim=-1):
        encoder.push(block)
    encoder.flush()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoder = StreamingDecoder(model)
    for frames in latent.split(max(1, push // model.hop_length), dim=-1):
        decoder.push(frames)
    return encode_s, time.perf_counter() - start


def run_streaming_benchmark(overrides: list[str]) -> None:
    """Prints streaming encode/decode speed (× real time, one thread) of an untrained causal
    model of ``overrides`` of the default config, and its latency and receptive field."""
    config = load_config(overrides=["model.causal=true", *overrides])
    cfg = config.model
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AudioVAE(cfg).eval()
    audio = 0.1 * torch.randn(cfg.audio_channels, round(STREAM_SECONDS * cfg.sample_rate))
    with torch.inference_mode():
        latent = model.encode(audio[None]).mean[0]
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f}; "
          f"causal model, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{cfg.lstm_layers} LSTM layers, hop {cfg.hop_length}, {cfg.audio_channels} channel(s) "
          f"at {cfg.sample_rate} Hz, {STREAM_SECONDS:g} s streamed")
    print(describe_timing(model_facts(model), cfg.sample_rate))
    time_streaming(model, audio[:, : 4 * cfg.hop_length], latent[:, :4], cfg.hop_length)  # warm-up
    with torch.inference_mode():  # the model's own cost, for comparison: one call, whole signal
        offline_s = _median_time(lambda: model.decode(latent[None]), repeats=1)
    print(f"offline (whole signal):          decode {STREAM_SECONDS / offline_s:7.1f}x real time")
    for label, push in stream_push_sizes(cfg.hop_length, cfg.sample_rate).items():
        encode_s, decode_s = time_streaming(model, audio, latent, push)
        print(f"push {label:5} ({push:5d} samples): encode {STREAM_SECONDS / encode_s:7.1f}x, "
              f"decode {STREAM_SECONDS / decode_s:7.1f}x real time (goal >= {STREAM_GOAL}x)")
