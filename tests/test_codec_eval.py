"""vae-evaluate --codec and --anchors (issue 20): the codec's rate is the size of the very file
vae-compress writes and its distortions are those of the audio vae-decompress gives; the ratios
are the per-file and mean figures' ratios; ffmpeg's anchors code near their bitrate and score
finite; a bad anchor list or a missing ffmpeg is one clear line and exit 2 before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_inference import make_bundle, tone
from vae.cli.compress import main as compress_main
from vae.cli.evaluate import main
from vae.codec import compress_file, decompress_file
from vae.codec.anchors import CodecOptions
from vae.inference import SegmentScorer, load_bundle, metric_segment_samples, read_audio

SECONDS = {"a.wav": 3.0, "b.wav": 1.0}  # two lengths: the mean is weighted by duration


def music_like(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """A tone whose level moves, plus noise: Opus's VBR spends its rate on it."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * rate)
    audio = tone(seconds, rate, channels) * (1 + 0.8 * np.sin(np.arange(frames) / rate * 3))[:, None]
    return (audio + 0.05 * rng.standard_normal(audio.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec_eval")
    # level normalisation off: the file scored is the file vae-compress reads, byte for byte
    model = make_bundle(root / "model", {"evaluation.loudness_lufs": None})
    bundle = load_bundle(model)
    rate, channels = bundle.config.model.sample_rate, bundle.config.model.audio_channels
    for seed, (name, seconds) in enumerate(SECONDS.items()):
        sf.write(root / name, music_like(seconds, rate, channels, seed), rate, subtype="FLOAT")
    return {"root": root, "model": model, "bundle": bundle}


def evaluate(setup, tmp_path, *flags: str, names=tuple(SECONDS)) -> dict:
    out = tmp_path / "report.json"
    files = [str(setup["root"] / name) for name in names]
    assert main([*files, "--model", str(setup["model"]), "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_vae_compress_dithers_as_the_codec_column_does_unless_told_none(setup, tmp_path):
    """vae-compress's default is --codec's and the app's (CodecOptions): the same bytes."""
    source, model = setup["root"] / "b.wav", str(setup["model"])
    assert compress_main([str(source), "--model", model, "-o", str(tmp_path / "cli.vaec")]) == 0
    assert compress_main([str(source), "--model", model, "-o", str(tmp_path / "cli_none.vaec"),
                          "--dither-seed", "none"]) == 0
    compress_file(setup["bundle"], source, tmp_path / "options.vaec",
                  dither_seed=CodecOptions().dither_seed)
    compress_file(setup["bundle"], source, tmp_path / "plain.vaec", dither_seed=None)
    read = lambda name: (tmp_path / name).read_bytes()  # noqa: E731
    assert read("cli.vaec") == read("options.vaec") and read("cli_none.vaec") == read("plain.vaec")
    assert read("cli.vaec") != read("plain.vaec")


def test_codec_figures_are_those_of_the_file_vae_compress_writes(setup, tmp_path, capsys):
    report = evaluate(setup, tmp_path, "--codec")
    bundle, root = setup["bundle"], setup["root"]
    for result, name in zip(report["files"], SECONDS):
        written = compress_file(bundle, root / name, tmp_path / f"{name}.vaec", dither_seed=0)
        size = (tmp_path / f"{name}.vaec").stat().st_size
        assert result["codec/coded_kbps"] == pytest.approx(size * 8 / SECONDS[name] / 1000, rel=1e-12)
        assert result["codec/ideal_kbps"] == pytest.approx(written["ideal_kbps"], rel=1e-12)
        # the distortions of the audio vae-decompress writes, scored against the file
        decompress_file(tmp_path / f"{name}.vaec", bundle, tmp_path / f"{name}.out.wav",
                        subtype="FLOAT")
        rate, channels = bundle.config.model.sample_rate, bundle.config.model.audio_channels
        scorer = SegmentScorer(rate, metric_segment_samples(bundle))
        scorer.add(read_audio(tmp_path / f"{name}.out.wav", rate, channels),
                   read_audio(root / name, rate, channels))
        for metric, value in scorer.result().items():
            assert result[f"codec/{metric}"] == pytest.approx(value, rel=1e-4, abs=1e-4), metric
        assert result["codec/kbps_over_kl"] == pytest.approx(result["codec/coded_kbps"]
                                                             / result["kl_kbps"])
        assert result["codec/mel_over_sampled"] == pytest.approx(result["codec/mel_distance"]
                                                                 / result["mel_distance_sampled"])
    mean, files = report["mean"], report["files"]
    coded = sum(r["codec/coded_kbps"] * r["duration_s"] for r in files) / sum(SECONDS.values())
    assert mean["codec/coded_kbps"] == pytest.approx(coded)  # total bits over total seconds
    assert mean["codec/kbps_over_kl"] == pytest.approx(mean["codec/coded_kbps"] / mean["kl_kbps"])
    assert mean["codec/mel_over_sampled"] == pytest.approx(mean["codec/mel_distance"]
                                                           / mean["mel_distance_sampled"])
    out = capsys.readouterr().out
    assert f"= {mean['codec/kbps_over_kl']:.3f} x the KL rate (goal <= 1.3)" in out
    assert f"mel distance {mean['codec/mel_over_sampled']:.3f} x the sampled" in out


def test_codec_flags_reach_the_coder(setup, tmp_path):
    fine = evaluate(setup, tmp_path, "--codec", names=["b.wav"])["mean"]
    coarse = evaluate(setup, tmp_path, "--codec", "--codec-scale", "4", "--codec-dither-seed",
                      "none", names=["b.wav"])["mean"]
    assert coarse["codec/coded_kbps"] < 0.7 * fine["codec/coded_kbps"]


def test_anchors_code_near_their_bitrate_and_score_finite(setup, tmp_path):
    clip = evaluate(setup, tmp_path, "--anchors", "opus:12,mp3:32", names=["a.wav"])["files"][0]
    assert clip["duration_s"] == 3.0
    # measured: opus:12 codes 13.2 kbit/s, mp3:32 33.0 (containers included) on this clip
    assert clip["anchor/opus_12/coded_kbps"] == pytest.approx(12, rel=0.3)
    assert clip["anchor/mp3_32/coded_kbps"] == pytest.approx(32, rel=0.3)
    for anchor in ("opus_12", "mp3_32"):
        for metric in ("mel_distance", "stft_distance", "si_sdr"):
            assert np.isfinite(clip[f"anchor/{anchor}/{metric}"]), (anchor, metric)
    # decoded in step with the reference (an encoder delay left in would cost all of it)
    assert clip["anchor/mp3_32/si_sdr"] > 5


@pytest.mark.parametrize("spec, why", [
    ("flac:5", "unknown codec 'flac'"),
    ("opus:abc", "'abc' is not a bitrate"),
    ("opus:0", "opus codes 0.5 to 512 kbit/s"),
])
def test_a_bad_anchor_is_one_line_before_any_work(spec, why, tmp_path, capsys):
    out = tmp_path / "report" / "r.json"
    # a model that does not exist: the anchors are checked before it is looked for
    status = main([str(tmp_path / "none.wav"), "--model", str(tmp_path / "no-model"),
                   "--anchors", f"opus:12,{spec}", "--json", str(out)])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: --anchors {spec!r}: {why}"), lines
    assert not out.parent.exists()


def test_without_ffmpeg_anchors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg on it
    status = main([str(tmp_path / "none.wav"), "--model", str(tmp_path / "no-model"),
                   "--anchors", "opus:12"])
    assert status == 2
    assert capsys.readouterr().err == ("error: --anchors: ffmpeg is not on PATH (.ci/setup "
                                       "installs it)\n")


def test_a_codec_flag_without_codec_is_one_line(tmp_path, capsys):
    status = main([str(tmp_path / "none.wav"), "--model", str(tmp_path / "no-model"),
                   "--codec-kbps", "3"])
    assert status == 2
    assert capsys.readouterr().err == "error: --codec-kbps: only with --codec\n"
