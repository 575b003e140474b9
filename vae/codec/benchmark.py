"""``vae-benchmark --codec``: compress and decompress speed on one CPU thread, in multiples of
real time, for the entropy coding alone and end to end (the model's encoder and decoder
included), with the rates the file gets. An untrained model of the config (its rates are not a
trained model's); figures, not assertions."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from vae.codec.files import compress_file, compress_latents, decompress_file, read_compressed
from vae.config import load_config
from vae.inference import encode_file, load_bundle, save_bundle
from vae.model import AudioVAE

CODEC_SECONDS = 30.0


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run_codec_benchmark(overrides: list[str], seconds: float = CODEC_SECONDS) -> None:
    config = load_config(overrides=overrides)
    cfg = config.model
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        bundle = load_bundle(save_bundle(AudioVAE(cfg).eval(), config, root / "model", {}, {}))
        t = torch.arange(round(seconds * cfg.sample_rate)) / cfg.sample_rate
        tone = 0.2 * torch.sin(2 * torch.pi * 220 * t) * (1 + torch.sin(t))
        audio = (tone + 0.02 * torch.randn(cfg.audio_channels, len(t))).T.numpy()
        sf.write(root / "clip.wav", audio, cfg.sample_rate)
        latents = encode_file(bundle, root / "clip.wav")
        print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f}; "
              f"{cfg.latent_dim} latent channels at {bundle.model.frame_rate:.2f} frames/s, "
              f"{seconds:g} s of audio (untrained model)")
        for options in ({"entropy_model": "gaussian", "dither_seed": 0},
                        {"entropy_model": "prior", "dither_seed": 0}):
            coded_s, result = _timed(lambda: compress_latents(latents, bundle, root / "x.vaec",
                                                              **options))
            decoded_s, _ = _timed(lambda: [s for _, s in read_compressed(root / "x.vaec")[1]])
            print(f"{options['entropy_model']:8} entropy coding alone: encode "
                  f"{seconds / coded_s:8.0f}x, decode {seconds / decoded_s:8.0f}x real time; "
                  f"{result['coded_kbps']:.2f} kbit/s coded, {result['kl_kbps']:.2f} KL")
        encode_s, _ = _timed(lambda: compress_file(bundle, root / "clip.wav", root / "y.vaec"))
        decode_s, _ = _timed(lambda: decompress_file(root / "y.vaec", bundle, root / "y.wav"))
        print(f"end to end (model included): compress {seconds / encode_s:6.1f}x, decompress "
              f"{seconds / decode_s:6.1f}x real time")
