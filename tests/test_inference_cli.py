"""The encode / decode / evaluate commands on real files (formats, rates, errors), scoring as
validation scores, and models loaded from MLflow URIs. Tiny real models from test_inference.py."""

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
import torch

from tests.test_inference import (SR, audio_dir, bundle_dir, make_bundle,  # noqa: F401 (fixtures)
                                  register_bundle, tone)
from vae.cli import decode as decode_cli
from vae.cli import encode as encode_cli
from vae.cli import evaluate as evaluate_cli
from vae.inference import (BundleError, LatentFileError, Latents, SegmentScorer, load_bundle,
                           load_model, model_facts, read_audio)
from vae.loudness import normalize_loudness
from vae.metric_table import METRICS
from vae.metrics import audible_si_sdr, mel_distance, stft_distance
from vae.model import kl_to_kbps


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


def test_encode_and_decode_say_latency_and_receptive_field(bundle_dir, tmp_path, capsys):
    """On stderr for the model loaded (--help says so); a non-causal model's latency is its
    convolutions' lookahead, far more than a hop."""
    for cli in (encode_cli, decode_cli):
        with pytest.raises(SystemExit):
            cli.main(["--help"])
        assert "latency and receptive field are printed" in " ".join(capsys.readouterr().out.split())
    source = tmp_path / "a.wav"
    sf.write(source, tone(0.3, SR, 2), SR)
    assert encode_cli.main([str(source), "--model", str(bundle_dir), "-o", str(tmp_path / "a.npz")]) == 0
    assert decode_cli.main([str(tmp_path / "a.npz"), "-o", str(tmp_path / "a.wav")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith(f"model {bundle_dir}") and "receptive field" in line]
    assert len(lines) == 2, lines
    facts = model_facts(load_bundle(bundle_dir).model)
    assert facts["latency_samples"] > load_bundle(bundle_dir).model.hop_length
    assert f"not causal, 0 LSTM layers, latency {facts['latency_ms']:.2f} ms " \
           f"({facts['latency_samples']} samples), receptive field " \
           f"{facts['receptive_field_samples']} samples" in lines[0]


# ---- evaluate -------------------------------------------------------------------------------------

def expected_metrics(bundle, path: Path) -> dict[str, float]:
    """The metrics computed the plain way: whole file at the evaluation loudness, whole-signal
    encode, both decodings (mean; a sample with the same seeded noise), fixed segments."""
    evaluation = bundle.config.evaluation
    audio, _ = normalize_loudness(read_audio(path, SR, 2), SR, evaluation.loudness_lufs,
                                  evaluation.loudness_floor_lufs)
    with torch.no_grad():
        posterior = bundle.model.encode(audio[None])
        noise = torch.Generator().manual_seed(evaluation.noise_seed)
        decoded = {"": bundle.model.decode(posterior.mean),
                   "_sampled": bundle.model.decode(posterior.sample(noise))}
    segment = round(bundle.config.data.chunk_seconds * SR)
    totals: dict[str, float] = {}
    for suffix, reconstruction in decoded.items():
        pieces = zip(reconstruction[0, :, : audio.shape[-1]].split(segment, -1), audio.split(segment, -1))
        for pred, ref in pieces:
            n = ref.shape[-1]
            for name, value in {"mel_distance": mel_distance(pred[None], ref[None], SR),
                                "stft_distance": stft_distance(pred[None], ref[None]),
                                "si_sdr": audible_si_sdr(pred[None], ref[None])[0]}.items():
                totals[name + suffix] = totals.get(name + suffix, 0.0) + float(value) * n
    kbps = kl_to_kbps(float(posterior.kl_per_channel().sum()), bundle.model.frame_rate)
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
        assert all(math.isfinite(result[m]) for m in METRICS)
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
    tail_si_sdr, _ = audible_si_sdr(pred[None, :, tail], ref[None, :, tail])
    assert result["si_sdr"] == pytest.approx(float(tail_si_sdr), rel=1e-5)
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
    done = subprocess.run([sys.executable, "-m", "vae.cli.evaluate", "--model", str(bundle_dir),
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


def test_evaluation_is_level_free_and_silence_is_not_a_nan(bundle_dir, tmp_path, capsys):
    rng = np.random.default_rng(3)
    t = np.arange(SR) / SR
    music = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] + 0.05 * rng.standard_normal((SR, 2))
    sf.write(tmp_path / "loud.wav", music.astype(np.float32), SR)
    sf.write(tmp_path / "quiet.wav", (music * 0.1).astype(np.float32), SR)  # -20 dB
    sf.write(tmp_path / "silent.wav", np.zeros((SR, 2), np.float32), SR)
    out = tmp_path / "eval.json"
    assert evaluate_cli.main(["--model", str(bundle_dir), str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    files = {Path(r["file"]).name: r for r in json.loads(out.read_text())["files"]}
    loud, quiet = files["loud.wav"], files["quiet.wav"]
    assert quiet["input_loudness_lufs"] == pytest.approx(loud["input_loudness_lufs"] - 20, abs=0.1)
    for name in ("mel_distance", "mel_distance_sampled"):
        assert abs(quiet[name] / loud[name] - 1) < 0.02, name
    assert files["silent.wav"]["si_sdr"] is None  # undefined, written as null, shown as n/a
    assert "nan" not in table and "n/a" in table
