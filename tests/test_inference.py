"""Inference on files: chunked encode/decode without seams, resampling and widening, the encode /
decode / evaluate CLIs (formats, rates, errors) and models loaded from MLflow URIs.

Tiny real models (tests/conftest.py MICRO sizes) with perturbed weights, so the reconstruction
depends on the input and a seam would show."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from tests.conftest import MICRO
from vae import decode as decode_cli
from vae import encode as encode_cli
from vae import evaluate as evaluate_cli
from vae.config import VAEConfig
from vae.export import BundleError, load_bundle, save_bundle
from vae.inference import (AudioError, Latents, LatentFileError, SegmentScorer, decode_stream,
                           decoder_context_frames, encode_stream, encoder_context_frames,
                           load_model, read_audio, stream_audio)
from vae.metrics import mel_distance, si_sdr, stft_distance
from vae.model import AudioVAE, kl_to_kbps

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

    from vae.mlflow_model import log_bundle_model

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


# ---- encode / decode CLIs -------------------------------------------------------------------------

def test_encode_decode_round_trip(bundle_dir, tmp_path, capsys):
    source = tmp_path / "in.flac"
    sf.write(source, tone(0.7, 48000, 2, seed=5), 48000)
    latents_file = tmp_path / "in.latents.npz"
    assert encode_cli.main([str(source), "--model", str(bundle_dir), "-o", str(latents_file),
                            "--chunk-seconds", "0.1"]) == 0
    latents = Latents.load(latents_file)
    bundle = load_bundle(bundle_dir)
    audio = read_audio(source, SR, 2)
    with torch.no_grad():
        posterior = bundle.model.encode(audio[None])
        whole = bundle.model(audio[None]).reconstruction[0]
    meta = latents.metadata
    assert latents.mean.shape == latents.std.shape == posterior.mean[0].shape
    assert (meta["sample_rate"], meta["hop_length"], meta["latent_dim"], meta["length"]) == \
        (SR, bundle.model.hop_length, 4, audio.shape[-1])
    assert meta["source"]["sample_rate"] == 48000 and meta["source"]["frames"] == 33600
    assert meta["model"]["provenance"]["made_by"] == "tests"
    torch.testing.assert_close(latents.mean, posterior.mean[0], atol=1e-5, rtol=0)
    expected_kbps = kl_to_kbps(float(posterior.kl_per_channel().sum()), bundle.model.frame_rate)
    assert meta["kl_kbps"] == pytest.approx(expected_kbps, rel=1e-5)

    # decode at the model's rate: the whole-signal forward pass, sample for sample
    at_model_rate = tmp_path / "model_rate.wav"
    assert decode_cli.main([str(latents_file), "-o", str(at_model_rate), "--sample-rate", "model",
                            "--subtype", "FLOAT", "--chunk-seconds", "0.1"]) == 0
    decoded, rate = sf.read(at_model_rate, dtype="float32")
    assert rate == SR and decoded.shape == (audio.shape[-1], 2)
    np.testing.assert_allclose(decoded.T, whole.numpy(), atol=1e-5)

    # default: back at the source's rate and length, in the format the extension names
    restored = tmp_path / "restored.ogg"
    assert decode_cli.main([str(latents_file), "--model", str(bundle_dir), "-o", str(restored)]) == 0
    info = sf.info(restored)
    assert (info.samplerate, info.frames, info.channels, info.format) == (48000, 33600, 2, "OGG")
    assert "restored.ogg" in capsys.readouterr().out


def test_encode_and_decode_folders_keep_structure(bundle_dir, audio_dir, tmp_path):
    latent_dir, out_dir = tmp_path / "latents", tmp_path / "decoded"
    assert encode_cli.main([str(audio_dir), "--model", str(bundle_dir), "-o", str(latent_dir)]) == 0
    written = sorted(p.relative_to(latent_dir).as_posix() for p in latent_dir.rglob("*.npz"))
    assert written == ["float_44k.npz", "mono_22k.npz", "stereo_48k.npz", "sub/stereo_32k.npz"]
    assert decode_cli.main([str(latent_dir), "-o", str(out_dir), "--format", "flac"]) == 0
    for name, rate, seconds in (("mono_22k", 22050, 0.8), ("stereo_48k", 48000, 1.0),
                                ("stereo_32k", 32000, 0.6)):
        info = sf.info(out_dir / f"{name}.flac")
        assert (info.samplerate, info.frames, info.channels) == (rate, round(rate * seconds), 2)


def test_decode_refuses_latents_of_another_model(bundle_dir, tmp_path, capsys):
    source = tmp_path / "a.wav"
    sf.write(source, tone(0.3, SR, 2), SR)
    latents_file = tmp_path / "a.npz"
    assert encode_cli.main([str(source), "--model", str(bundle_dir), "-o", str(latents_file)]) == 0
    other = make_bundle(tmp_path / "other", seed=1)  # same shapes, other weights
    assert decode_cli.main([str(latents_file), "--model", str(other), "-o", str(tmp_path / "x.wav")]) == 2
    assert "encoded by another model" in capsys.readouterr().err
    assert decode_cli.main([str(latents_file), "--model", str(other), "-o", str(tmp_path / "x.wav"),
                            "--allow-other-model"]) == 0
    wider = make_bundle(tmp_path / "wider", {"model.latent_dim": 8})
    assert decode_cli.main([str(latents_file), "--model", str(wider), "-o", str(tmp_path / "y.wav"),
                            "--allow-other-model"]) == 2
    assert "latent_dim=4" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    assert decode_cli.main([str(tmp_path / "junk.npz"), "-o", str(tmp_path / "z.wav")]) == 2
    assert "junk.npz: not a latent file" in capsys.readouterr().err
    with pytest.raises(LatentFileError):
        Latents.load(tmp_path / "missing.npz")


# ---- evaluate -------------------------------------------------------------------------------------

def expected_metrics(bundle, path: Path) -> dict[str, float]:
    """The metrics computed the plain way: whole-signal forward, fixed segments, vae.metrics."""
    audio = read_audio(path, SR, 2)
    with torch.no_grad():
        output = bundle.model(audio[None])
    segment = round(bundle.config.data.chunk_seconds * SR)
    totals = {"mel_distance": 0.0, "stft_distance": 0.0, "si_sdr": 0.0}
    for pred, ref in zip(output.reconstruction[0].split(segment, -1), audio.split(segment, -1)):
        n = ref.shape[-1]
        totals["mel_distance"] += float(mel_distance(pred[None], ref[None], SR)) * n
        totals["stft_distance"] += float(stft_distance(pred[None], ref[None])) * n
        totals["si_sdr"] += float(si_sdr(pred[None], ref[None])) * n
    kbps = kl_to_kbps(float(output.posterior.kl_per_channel().sum()), bundle.model.frame_rate)
    return {**{k: v / audio.shape[-1] for k, v in totals.items()}, "kl_kbps": kbps}


def test_evaluate_folder_of_formats_and_rates(bundle_dir, audio_dir, tmp_path, capsys):
    report_file = tmp_path / "report" / "eval.json"
    assert evaluate_cli.main(["--model", str(bundle_dir), str(audio_dir), "--json",
                              str(report_file), "--chunk-seconds", "0.2"]) == 0
    table = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    files = {Path(r["file"]).name: r for r in report["files"]}
    assert sorted(files) == ["float_44k.wav", "mono_22k.wav", "stereo_32k.ogg", "stereo_48k.flac"]
    for name in files:
        assert name in table
    assert "mean (duration-weighted)" in table
    assert {files[n]["input_sample_rate"] for n in files} == {22050, 48000, 32000, SR}

    bundle = load_bundle(bundle_dir)
    # 1.0 s at 48 kHz → exactly 10 segments of 0.1 s at 44.1 kHz: the plain computation must match
    expected = expected_metrics(bundle, audio_dir / "stereo_48k.flac")
    for name, value in expected.items():
        assert files["stereo_48k.flac"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for result in report["files"]:
        assert all(math.isfinite(result[m]) for m in ("mel_distance", "stft_distance", "si_sdr", "kl_kbps"))
    durations = np.array([r["duration_s"] for r in report["files"]])
    mel = np.array([r["mel_distance"] for r in report["files"]])
    assert report["mean"]["mel_distance"] == pytest.approx(float((mel * durations).sum() / durations.sum()),
                                                           rel=1e-3)


def test_segment_scorer_merges_a_short_tail_and_skips_silence():
    torch.manual_seed(0)
    segment = 4410
    ref = torch.randn(2, int(2.3 * segment)) * 0.1
    pred = ref + 0.05 * torch.randn_like(ref)
    ref[:, :segment] = 0.0  # a silent first segment: si_sdr is undefined there
    scorer = SegmentScorer(SR, segment)
    scorer.add(pred, ref)
    result = scorer.result()
    assert scorer.segments == 2  # [segment] and [1.3 · segment], not a third scrap
    tail = slice(segment, None)
    assert result["si_sdr"] == pytest.approx(float(si_sdr(pred[None, :, tail], ref[None, :, tail])),
                                             rel=1e-5)
    first = float(mel_distance(pred[None, :, :segment], ref[None, :, :segment], SR))
    rest = float(mel_distance(pred[None, :, tail], ref[None, :, tail], SR))
    assert result["mel_distance"] == pytest.approx((first * segment + rest * (ref.shape[-1] - segment))
                                                   / ref.shape[-1], rel=1e-5)


@pytest.mark.parametrize("case", ["unreadable", "empty_folder", "missing_weights", "no_such_file",
                                  "too_short", "no_such_bundle"])
def test_evaluate_errors_name_the_problem(case, bundle_dir, tmp_path, capsys):
    model, inputs = str(bundle_dir), []
    if case == "unreadable":
        (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        inputs, needle = [str(tmp_path / "broken.wav")], "broken.wav: not readable as audio"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "readme.txt").write_text("no audio here")
        inputs, needle = [str(tmp_path / "empty")], "empty: no audio files in this folder"
    elif case == "missing_weights":
        partial = tmp_path / "partial"
        partial.mkdir()
        (partial / "config.yaml").write_text((bundle_dir / "config.yaml").read_text())
        sf.write(tmp_path / "ok.wav", tone(0.2, SR, 2), SR)
        model, inputs, needle = str(partial), [str(tmp_path / "ok.wav")], "missing model.safetensors"
    elif case == "no_such_file":
        inputs, needle = [str(tmp_path / "nope.flac")], "nope.flac: no such file or folder"
    elif case == "too_short":
        sf.write(tmp_path / "blip.wav", tone(0.01, SR, 2), SR)
        inputs, needle = [str(tmp_path / "blip.wav")], "blip.wav: too short to score"
    else:
        sf.write(tmp_path / "ok.wav", tone(0.2, SR, 2), SR)
        model, inputs, needle = str(tmp_path / "no_bundle"), [str(tmp_path / "ok.wav")], \
            "no_bundle: no such bundle folder"
    assert evaluate_cli.main(["--model", model, *inputs]) == 2
    assert needle in capsys.readouterr().err


def test_evaluate_runs_as_a_module(bundle_dir, tmp_path):
    (tmp_path / "bad.ogg").write_bytes(b"OggS but not really")
    done = subprocess.run([sys.executable, "-m", "vae.evaluate", "--model", str(bundle_dir),
                           str(tmp_path / "bad.ogg")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "bad.ogg" in done.stderr and "Traceback" not in done.stderr


# ---- MLflow model URIs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(bundle_dir, tmp_path_factory) -> str:
    return register_bundle(bundle_dir, tmp_path_factory.mktemp("mlflow"))


def test_models_uri_evaluates_like_the_bundle_folder(registry, bundle_dir, audio_dir, tmp_path):
    import mlflow

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    bundle = load_model("models:/tiny-vae@champion", tracking_uri=registry)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(),
            os.environ.get("MLFLOW_TRACKING_URI")) == before  # MLflow's global state put back
    reference = load_bundle(bundle_dir)
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(bundle.model.state_dict()[key], value, rtol=0, atol=0)
    files = [str(audio_dir / "mono_22k.wav")]
    assert evaluate_cli.main(["--model", "models:/tiny-vae@champion", "--tracking-uri", registry,
                              *files, "--json", str(tmp_path / "uri.json")]) == 0
    assert evaluate_cli.main(["--model", str(bundle_dir), *files, "--json",
                              str(tmp_path / "dir.json")]) == 0
    by_uri = json.loads((tmp_path / "uri.json").read_text())["mean"]
    by_dir = json.loads((tmp_path / "dir.json").read_text())["mean"]
    assert by_uri == pytest.approx(by_dir, rel=1e-6)
    with pytest.raises(BundleError, match="models:/tiny-vae@nobody"):
        load_model("models:/tiny-vae@nobody", tracking_uri=registry)
