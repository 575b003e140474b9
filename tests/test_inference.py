"""Inference on files: chunked encode/decode without seams, resampling and widening. (The encode /
decode / evaluate commands and MLflow model URIs: test_inference_cli.py, which shares the helpers
and fixtures below.)

Tiny real models (tests/conftest.py MICRO sizes) with perturbed weights, so the reconstruction
depends on the input and a seam would show."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from tests.conftest import MICRO
from vae.config import VAEConfig
from vae.inference import (AudioError, decode_stream, decoder_context_frames, encode_stream,
                           encoder_context_frames, load_bundle, read_audio, save_bundle,
                           stream_audio)
from vae.model import AudioVAE

SR = 44100
# A deeper, odd-strided variant: hop 15 (odd padding in every strided conv), dilations up to 9,
# snake activations; its receptive field is much wider than MICRO's.
WIDE = {"model.strides": [3, 5], "model.residual_dilations": [1, 3, 9], "model.latent_dim": 6,
        "model.activation": "snake"}
SEAM_TOLERANCE = 1e-5  # measured: ~2e-7 (float rounding); a seam is > 1e-3


def make_model(overrides: dict | None = None, seed: int = 0) -> tuple[AudioVAE, VAEConfig]:
    """A micro model whose weights are perturbed away from the (nearly input-independent) init."""
    config = VAEConfig().override({**MICRO, **(overrides or {})})
    torch.manual_seed(seed)
    model = AudioVAE(config.model).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model, config


def make_bundle(folder: Path, overrides: dict | None = None, seed: int = 0) -> Path:
    model, config = make_model(overrides, seed)
    return save_bundle(model, config, folder, {"val/mel_distance": 1.5},
                       {"made_by": "tests", "seed": seed})


def tone(seconds: float, rate: int, channels: int, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """[frames, channels]: a tone per channel plus a little noise (float32, peak < 0.5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    columns = [0.3 * np.sin(2 * np.pi * freq * (1 + 0.5 * c) * t) for c in range(channels)]
    return (np.stack(columns, 1) + 0.01 * rng.standard_normal((len(t), channels))).astype(np.float32)


def register_bundle(bundle_dir: Path, root: Path, name: str = "tiny-vae") -> str:
    """Log ``bundle_dir`` as an MLflow model in a sqlite store under ``root``, registered as
    ``name`` with alias ``champion``; returns its tracking URI (MLflow's global one is reset)."""
    import mlflow

    from vae.inference.mlflow_model import log_bundle_model

    uri = f"sqlite:///{root / 'mlflow.db'}"
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # log_bundle_model uses MLflow's fluent (global) API
    try:
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment("inference-tests",
                                              artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        version = log_bundle_model(bundle_dir, registered_name=name)
        client.set_registered_model_alias(name, "champion", version)
    finally:  # back to "unset", and the environment as it was (set_tracking_uri exports it)
        mlflow.set_tracking_uri(None)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
    return uri


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    """Several formats and rates: wav 22.05 kHz mono, flac 48 kHz stereo, ogg 32 kHz stereo in a
    subfolder, wav 44.1 kHz float; plus a file that is not audio (ignored in a folder)."""
    folder = tmp_path_factory.mktemp("audio")
    (folder / "sub").mkdir()
    sf.write(folder / "mono_22k.wav", tone(0.8, 22050, 1), 22050)
    sf.write(folder / "stereo_48k.flac", tone(1.0, 48000, 2, 330.0, 1), 48000)
    sf.write(folder / "sub" / "stereo_32k.ogg", tone(0.6, 32000, 2, 550.0, 2), 32000)
    sf.write(folder / "float_44k.wav", tone(0.5, SR, 2, 220.0, 3), SR, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio")
    return folder


# ---- chunked processing ---------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, WIDE], ids=["micro", "wide-odd-strides"])
def test_chunked_encode_decode_equal_whole_signal(overrides):
    model, _ = make_model(overrides)
    hop = model.hop_length
    length = 7 * hop * 37 + 5  # not a multiple of the hop
    audio = torch.randn(2, length) * 0.3
    with torch.no_grad():
        posterior = model.encode(audio[None])
        whole = model.decode(posterior.mean)[0]
    assert whole.std(dim=-1).min() > 1e-3, "the model output must vary, or a seam could hide"

    # audio arriving in odd-sized blocks, chunks of 16 frames: many chunk boundaries
    blocks = list(audio.split(1001, dim=-1))
    parts = list(encode_stream(model, blocks, chunk_frames=16))
    mean = torch.cat([m for m, _ in parts], -1)
    std = torch.cat([s for _, s in parts], -1)
    assert len(parts) > 10 and mean.shape == posterior.mean[0].shape == (model.config.latent_dim,
                                                                        math.ceil(length / hop))
    chunked = torch.cat(list(decode_stream(model, posterior.mean[0], chunk_frames=16)), -1)
    assert chunked.shape == whole.shape

    encode_error = max((mean - posterior.mean[0]).abs().max(), (std - posterior.std[0]).abs().max())
    decode_error = (chunked - whole).abs().max()
    print(f"max |chunked - whole|: latents {float(encode_error):.2e}, audio {float(decode_error):.2e}")
    assert encode_error < SEAM_TOLERANCE and decode_error < SEAM_TOLERANCE

    # the same chunking without context does leave seams: the comparison above can fail
    no_context = torch.cat(list(decode_stream(model, posterior.mean[0], 16, context_frames=0)), -1)
    assert (no_context - whole).abs().max() > 1e-3
    parts = list(encode_stream(model, blocks, 16, context_frames=0))
    assert (torch.cat([m for m, _ in parts], -1) - posterior.mean[0]).abs().max() > 1e-3


def test_context_covers_the_receptive_field():
    """Measured, not assumed: an impulse moves the output only within the context computed."""
    model, _ = make_model(WIDE)
    hop = model.hop_length
    frames = 120
    audio = torch.randn(1, 2, frames * hop) * 0.1
    bumped = audio.clone()
    bumped[..., 60 * hop] += 1.0
    with torch.no_grad():
        moved = (model.encode(bumped).mean - model.encode(audio).mean).abs().amax(dim=1)[0]
        latent = model.encode(audio).mean
        kicked = latent.clone()
        kicked[..., 60] += 1.0
        out = (model.decode(kicked) - model.decode(latent)).abs().amax(dim=1)[0]
    reach = (moved > 0).nonzero().flatten()
    assert reach.numel() > 1
    assert max(60 - int(reach.min()), int(reach.max()) - 60) <= encoder_context_frames(model)
    reach = (out > 0).nonzero().flatten()
    assert max(60 * hop - int(reach.min()), int(reach.max()) - 60 * hop) <= \
        decoder_context_frames(model) * hop


def test_memory_is_bounded_by_the_chunk_not_the_file(bundle_dir, tmp_path):
    """A long file is never handed to the model whole: every call sees ≤ chunk + 2·context."""
    bundle = load_bundle(bundle_dir)
    model = bundle.model
    seen: list[int] = []
    encode, decode = model.encode, model.decode
    model.encode = lambda x: (seen.append(x.shape[-1]), encode(x))[1]
    model.decode = lambda z: (seen.append(z.shape[-1] * model.hop_length), decode(z))[1]
    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, SR, 2), SR)
    from vae.inference import chunk_frames_for, evaluate_file

    result = evaluate_file(bundle, path, chunk_seconds=0.25)
    chunk = chunk_frames_for(model, 0.25)
    context = max(encoder_context_frames(model), decoder_context_frames(model))
    assert len(seen) > 20 and max(seen) <= (chunk + 2 * context) * model.hop_length < 3 * SR / 4
    assert math.isfinite(result["mel_distance"])


# ---- audio in -------------------------------------------------------------------------------------

def test_read_audio_resamples_with_soxr_and_widens_mono(tmp_path):
    data = tone(0.5, 22050, 1, freq=1000.0)
    sf.write(tmp_path / "mono.flac", data, 22050)
    audio = read_audio(tmp_path / "mono.flac", SR, 2)
    assert audio.shape == (2, 2 * len(data)) and audio.dtype == torch.float32
    assert torch.equal(audio[0], audio[1])
    # the streamed, block-wise resampling equals soxr's one-shot resampling of the whole file
    reference = soxr.resample(sf.read(tmp_path / "mono.flac", dtype="float32")[0], 22050, SR, "HQ")
    np.testing.assert_allclose(audio[0].numpy(), reference, atol=1e-4)
    small_blocks = torch.cat(list(stream_audio(tmp_path / "mono.flac", SR, 2, block_frames=1000)), -1)
    torch.testing.assert_close(small_blocks, audio, atol=1e-5, rtol=0)
    # the tone stays at 1 kHz with its level
    spectrum = torch.fft.rfft(audio[0] * torch.hann_window(audio.shape[-1]))
    assert abs(int(spectrum.abs().argmax()) * SR / audio.shape[-1] - 1000.0) < 5.0
    rms_in, rms_out = float(np.sqrt((data ** 2).mean())), float(audio[0].pow(2).mean().sqrt())
    assert rms_out == pytest.approx(rms_in, rel=0.01)


def test_stereo_for_a_mono_model_is_averaged_and_surround_is_refused(tmp_path):
    sf.write(tmp_path / "st.wav", tone(0.2, SR, 2), SR)
    mono = read_audio(tmp_path / "st.wav", SR, 1)
    stereo = read_audio(tmp_path / "st.wav", SR, 2)
    torch.testing.assert_close(mono[0], stereo.mean(0), atol=1e-6, rtol=0)
    sf.write(tmp_path / "six.wav", np.zeros((1000, 6), np.float32), SR)
    with pytest.raises(AudioError, match=r"six\.wav: has 6 channels"):
        read_audio(tmp_path / "six.wav", SR, 2)
