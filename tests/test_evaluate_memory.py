"""vae-evaluate streams a file: its loudness pass holds blocks, never the file, and measures what
pyloudnorm measures on the whole file. (Peak memory of whole evaluations, 10 s vs 10 min: the
benchmark, ``vae-benchmark --memory``.)"""

from __future__ import annotations

import sys

import pytest
import soundfile as sf

from tests.test_inference import SR, bundle_dir, tone  # noqa: F401 (fixture)
from vae.inference import load_bundle, read_audio
from vae.inference.scoring import level_gain
from vae.loudness import integrated_loudness, loudness_gain
from vae.training.benchmark import peak_rss_mb, write_test_audio

SHORT_S, LONG_S = 60.0, 360.0


def test_level_gain_is_pyloudnorm_on_the_whole_resampled_file(bundle_dir, tmp_path):
    """A 48 kHz file for a 44.1 kHz model: the streamed measurement of the resampled blocks equals
    pyloudnorm's of the whole resampled file (what evaluation measured before it streamed)."""
    path = tmp_path / "stereo_48k.flac"
    sf.write(path, tone(2.3, 48000, 2, 330.0, 1), 48000)
    bundle = load_bundle(bundle_dir)
    evaluation = bundle.config.evaluation
    whole = integrated_loudness(read_audio(path, SR, 2), SR)
    gain, loudness = level_gain(bundle, path)
    assert loudness == pytest.approx(whole, abs=1e-6)
    assert gain == pytest.approx(loudness_gain(whole, evaluation.loudness_lufs,
                                               evaluation.loudness_floor_lufs), rel=1e-6)


def test_loudness_pass_memory_does_not_grow_with_the_file(bundle_dir, tmp_path):
    """Six minutes of stereo vs one, each measured in a fresh process. The extra five minutes are
    101 MiB as float32; measured whole (pyloudnorm's float64 copies) they added 507 MB to the peak,
    streamed 0.1 MB."""
    peaks = []
    for seconds in (SHORT_S, LONG_S):
        audio = write_test_audio(tmp_path / f"{seconds:g}.wav", seconds, SR, 2)
        code = ("import sys; from vae.inference import load_bundle; "
                "from vae.inference.scoring import level_gain; "
                "level_gain(load_bundle(sys.argv[1]), sys.argv[2])")
        peaks.append(peak_rss_mb([sys.executable, "-c", code, str(bundle_dir), str(audio)])[0])
    extra_audio_mb = (LONG_S - SHORT_S) * SR * 2 * 4 / 2**20
    assert peaks[1] - peaks[0] < 0.3 * extra_audio_mb, peaks
