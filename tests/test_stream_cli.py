"""vae-encode --stream / vae-decode --stream on a tiny causal model saved as a bundle: the same
latents and audio as without --stream, through files and through stdin/stdout pipes; the refusals
(a model that is not causal, a block the stream cannot take); and the bundle's model.json, checked
against the model its config and weights make (older bundles have none and load unchanged)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_inference import SR, bundle_dir, make_bundle, tone  # noqa: F401 (fixtures)
from vae.cli import decode as decode_cli
from vae.cli import encode as encode_cli
from vae.inference import FACTS_FILE, BundleError, Latents, load_bundle, model_facts
from vae.inference import stream_encode

TOLERANCE = 1e-5  # the bound; measured about 3e-7


@pytest.fixture(scope="module")
def causal_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("causal") / "tiny", {"model.causal": True})


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """0.7 s of stereo at 48 kHz: both paths resample it to the model's 44.1 kHz."""
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    sf.write(path, tone(0.7, 48000, 2, seed=5), 48000, subtype="FLOAT")
    return path


def encode(*args: str | Path) -> int:
    return encode_cli.main([str(a) for a in args])


def decode(*args: str | Path) -> int:
    return decode_cli.main([str(a) for a in args])


def assert_same_latents(a: Latents, b: Latents) -> None:
    assert a.mean.shape == b.mean.shape and a.mean.shape[1] > 0
    torch.testing.assert_close(a.mean, b.mean, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(a.std, b.std, atol=TOLERANCE, rtol=0)
    for key in ("length", "frames", "hop_length", "sample_rate", "latent_dim"):
        assert a.metadata[key] == b.metadata[key], key
    assert a.metadata["kl_kbps"] == pytest.approx(b.metadata["kl_kbps"], rel=1e-6)


def run_module(module: str, *args: str | Path, stdin: bytes | None = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], input=stdin,
                          capture_output=True, timeout=300)


def test_stream_encode_equals_the_chunked_encode(causal_bundle, source, tmp_path, capsys):
    assert encode(source, "--model", causal_bundle, "-o", tmp_path / "chunked.npz") == 0
    # blocks of 13 ms: not a multiple of the hop, and resampled on the way
    assert encode(source, "--model", causal_bundle, "-o", tmp_path / "streamed.npz", "--stream",
                  "--chunk-seconds", "0.013") == 0
    err = capsys.readouterr().err
    assert err.count("causal (streamable), 0 LSTM layers, latency 0.73 ms (32 samples), "
                     "receptive field") == 2, err
    streamed = Latents.load(tmp_path / "streamed.npz")
    assert_same_latents(Latents.load(tmp_path / "chunked.npz"), streamed)
    assert streamed.metadata["source"]["frames"] == 33600


@pytest.mark.parametrize("rate", ["original", "model"])
def test_stream_decode_equals_the_chunked_decode(causal_bundle, source, tmp_path, rate):
    latents = tmp_path / "in.npz"
    assert encode(source, "--model", causal_bundle, "-o", latents) == 0
    for name, extra in (("chunked", ()), ("streamed", ("--stream", "--chunk-seconds", "0.01"))):
        assert decode(latents, "-o", tmp_path / f"{name}.wav", "--subtype", "FLOAT",
                      "--sample-rate", rate, *extra) == 0
    chunked, chunked_rate = sf.read(tmp_path / "chunked.wav", dtype="float32")
    streamed, streamed_rate = sf.read(tmp_path / "streamed.wav", dtype="float32")
    assert chunked_rate == streamed_rate == (48000 if rate == "original" else SR)
    assert chunked.shape == streamed.shape and np.abs(chunked).max() > 1e-3
    np.testing.assert_allclose(streamed, chunked, atol=TOLERANCE, rtol=0)


def test_stdin_and_stdout_streams(causal_bundle, source, tmp_path):
    """A wav piped into vae-encode --stream -, latents piped out of vae-decode --stream -o - (au)."""
    assert encode(source, "--model", causal_bundle, "-o", tmp_path / "file.npz") == 0
    piped = run_module("vae.cli.encode", "--stream", "-", "--model", causal_bundle, "-o",
                       tmp_path / "piped.npz", stdin=source.read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()[-2000:]
    from_stdin = Latents.load(tmp_path / "piped.npz")
    assert_same_latents(Latents.load(tmp_path / "file.npz"), from_stdin)
    assert from_stdin.metadata["source"]["name"] == "stdin"
    assert from_stdin.metadata["source"]["sample_rate"] == 48000

    assert decode(tmp_path / "file.npz", "-o", tmp_path / "file.wav", "--subtype", "FLOAT",
                  "--sample-rate", "model") == 0
    out = run_module("vae.cli.decode", "--stream", tmp_path / "file.npz", "-o", "-", "--subtype",
                     "FLOAT", "--sample-rate", "model")
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert b"stdout  (30870 samples)" in out.stderr  # the summary stays out of the audio
    audio, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
    expected, _ = sf.read(tmp_path / "file.wav", dtype="float32")
    assert rate == SR and audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_model_that_is_not_causal_refuses_to_stream(command, bundle_dir, causal_bundle, source,
                                                       tmp_path, capsys):
    if command == "encode":
        out = tmp_path / "out.npz"
        code = encode(source, "--model", bundle_dir, "-o", out, "--stream")
    else:
        latents = tmp_path / "in.npz"
        assert encode(source, "--model", bundle_dir, "-o", latents) == 0
        capsys.readouterr()
        out = tmp_path / "out.wav"
        code = decode(latents, "-o", out, "--stream")
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {bundle_dir}: is not causal (model.causal false): it cannot stream; drop " \
           "--stream" in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("bad", ["channels", "dtype"])
def test_a_block_the_stream_cannot_take_mid_stream_is_one_error(bad, causal_bundle, source,
                                                                tmp_path, capsys, monkeypatch):
    """What a producer of blocks may hand the stream (the file reader itself always gives the
    model's channels in float32): a wrong block after good ones is refused, nothing written."""
    good = torch.zeros(2, 1000)
    wrong = torch.zeros(3, 500) if bad == "channels" else torch.zeros(2, 500, dtype=torch.float64)
    monkeypatch.setattr(stream_encode, "stream_audio",
                        lambda *args, **kwargs: iter([good, good, wrong, good]))
    out = tmp_path / "out.npz"
    assert encode(source, "--model", causal_bundle, "-o", out, "--stream") == 2
    err = capsys.readouterr().err.splitlines()
    got = "[3, 500]" if bad == "channels" else "float64 [2, 500]"
    assert err[-1].startswith(f"error: {source}: after 2000 samples, audio chunk: expected a "
                              "float32 torch.Tensor [channels=2, n]; got"), err
    assert err[-1].endswith(got), err
    assert not out.exists()


FACTS_CRAFTS = {
    "causal claimed": ({"causal": False}, "causal is false, but the model of config.yaml and "
                                          "model.safetensors has true"),
    "receptive field": ({"receptive_field_samples": 100}, "receptive_field_samples is 100, but"),
    "latency": ({"latency_ms": 0.1}, "latency_ms is 0.1, but"),
    "lstm as text": ({"lstm_layers": "2"}, 'lstm_layers is "2", but'),
    "unknown key": ({"lookahead": 0}, "unknown key 'lookahead'"),
}


@pytest.mark.parametrize("case", list(FACTS_CRAFTS))
def test_model_json_that_disagrees_with_the_model_is_refused(case, causal_bundle, source,
                                                             tmp_path, capsys):
    bundle = shutil.copytree(causal_bundle, tmp_path / "bundle")
    change, message = FACTS_CRAFTS[case]
    facts = json.loads((bundle / FACTS_FILE).read_text())
    (bundle / FACTS_FILE).write_text(json.dumps({**facts, **change}))
    out = tmp_path / "out.npz"
    assert encode(source, "--model", bundle, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bundle / FACTS_FILE}: ") and message in err, err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(BundleError, match=message.split(",")[0]):
        load_bundle(bundle)


def test_config_that_says_causal_false_under_causal_facts_is_refused(causal_bundle, tmp_path):
    """The other way round: config.yaml edited to non-causal; model.json still says causal."""
    bundle = shutil.copytree(causal_bundle, tmp_path / "bundle")
    config = bundle / "config.yaml"
    config.write_text(config.read_text().replace("causal: true", "causal: false"))
    with pytest.raises(BundleError, match=r"model.json: causal is true, but the model of "
                                          r"config.yaml and model.safetensors has false"):
        load_bundle(bundle)


def test_a_bundle_without_model_json_loads_unchanged(causal_bundle, source, tmp_path, capsys):
    bundle = shutil.copytree(causal_bundle, tmp_path / "old")
    (bundle / FACTS_FILE).unlink()
    old, new = load_bundle(bundle), load_bundle(causal_bundle)
    assert old.facts == {} and new.facts == model_facts(new.model)
    for key, value in new.model.state_dict().items():
        torch.testing.assert_close(old.model.state_dict()[key], value, rtol=0, atol=0)
    assert encode(source, "--model", bundle, "-o", tmp_path / "a.npz", "--stream") == 0
    assert "latency 0.73 ms" in capsys.readouterr().err  # computed when not recorded
    recorded = json.loads((causal_bundle / FACTS_FILE).read_text())
    assert recorded == {"causal": True, "lstm_layers": 0, "latency_samples": 32,
                        "latency_ms": 32 * 1000 / SR,
                        "receptive_field_samples": new.facts["receptive_field_samples"]}
