"""Audio with NaN/inf samples, latent files of the wrong dtype, shape or metadata, empty decodes
and data errors in training: one line naming the file, exit 2, from every command; never a
silent nan, never a traceback, never an empty output reported as written."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_cli import run
from tests.test_inference import SR, bundle_dir, tone  # noqa: F401 (fixture)
from vae.cli import decode as decode_cli
from vae.cli import encode as encode_cli
from vae.cli import evaluate as evaluate_cli


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_refused_by_encode_and_evaluate(bad, bundle_dir, tmp_path, capsys):
    audio = tone(0.5, SR, 2)
    audio[1000, 1] = bad
    source = tmp_path / "broken.wav"
    sf.write(source, audio, SR, subtype="FLOAT")
    out = tmp_path / "broken.npz"
    assert encode_cli.main([str(source), "--model", str(bundle_dir), "-o", str(out)]) == 2
    one_error_line(capsys, str(source), "NaN or infinite samples")
    assert not out.exists()
    assert evaluate_cli.main([str(source), "--model", str(bundle_dir)]) == 2
    one_error_line(capsys, str(source), "NaN or infinite samples")


@pytest.fixture
def latents_file(bundle_dir, tmp_path) -> Path:
    source = tmp_path / "in.wav"
    sf.write(source, tone(0.5, SR, 2), SR)
    out = tmp_path / "in.npz"
    assert encode_cli.main([str(source), "--model", str(bundle_dir), "-o", str(out)]) == 0
    return out


def rewrite(path: Path, **changes) -> Path:
    """The latent file with arrays or the metadata string replaced (still no pickle)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    bad = path.with_name("bad.npz")
    with bad.open("wb") as handle:
        np.savez(handle, **arrays)
    return bad


def metadata_of(path: Path) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["metadata"]))


def with_metadata(path: Path, **changes) -> Path:
    return rewrite(path, metadata=np.array(json.dumps({**metadata_of(path), **changes})))


CASES = {
    "int dtype": (lambda f: rewrite(f, mean=np.load(f)["mean"].astype(np.int32)), "mean has dtype int32"),
    "complex dtype": (lambda f: rewrite(f, std=np.load(f)["std"].astype(np.complex64)), "std has dtype complex64"),
    "3-d mean": (lambda f: rewrite(f, mean=np.load(f)["mean"][None]), "mean has shape (1, 4,"),
    "NaN latents": (lambda f: rewrite(f, mean=np.full_like(np.load(f)["mean"], np.nan)), "mean contains NaN"),
    "zero frames": (lambda f: rewrite(f, mean=np.zeros((4, 0), np.float32), std=np.zeros((4, 0), np.float32)),
                    "mean has no latent frames"),
    "metadata a list": (lambda f: rewrite(f, metadata=np.array("[1, 2]")), "not a vae-latents/1 latent file"),
    "length a string": (lambda f: with_metadata(f, length="long"), "metadata.length must be a non-negative whole number"),
    "negative hop": (lambda f: with_metadata(f, hop_length=-32), "metadata.hop_length must be"),
    "model a string": (lambda f: with_metadata(f, model="tiny"), "metadata.model must be a mapping"),
    "length zero": (lambda f: with_metadata(f, length=0), "metadata.length is 0"),
    # metadata that cannot be true of the arrays it describes
    "length 10^12": (lambda f: with_metadata(f, length=10**12),
                     "metadata.length is 1000000000000 samples, but 690 frames of hop 32 hold"),
    "length of fewer frames": (lambda f: with_metadata(f, length=100), "metadata.length is 100 samples"),
    "frames disagree": (lambda f: with_metadata(f, frames=7), "metadata.frames is 7, but the arrays hold 690"),
    "source rate 0": (lambda f: with_metadata(f, source={**metadata_of(f)["source"], "sample_rate": 0}),
                      "metadata.source.sample_rate must be a whole number of Hz from 1 to 768000, got 0"),
    "source rate 10^9": (lambda f: with_metadata(f, source={**metadata_of(f)["source"], "sample_rate": 10**9}),
                         "metadata.source.sample_rate must be"),
    "hop zero": (lambda f: with_metadata(f, hop_length=0), "metadata.hop_length must be positive"),
    "duplicate metadata key": (lambda f: rewrite(f, metadata=np.array(
        json.dumps(metadata_of(f))[:-1] + ', "length": 5}')), "metadata: length: duplicate key"),
    "metadata not a string": (lambda f: rewrite(f, metadata=np.zeros(3)), "metadata must be one JSON string"),
    "0 bytes": (lambda f: empty_file(f), "not a latent file written by vae-encode"),
    "header larger than data": (lambda f: truncated_mean(f), "mean: the header's shape (4, 690) does not match"),
}


def empty_file(path: Path) -> Path:
    bad = path.with_name("bad.npz")
    bad.write_bytes(b"")
    return bad


def truncated_mean(path: Path) -> Path:
    """The mean's .npy member with its data cut short (its header still claims every frame)."""

    bad = path.with_name("bad.npz")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data[:-400] if name == "mean.npy" else data)
    return bad


@pytest.mark.parametrize("case", list(CASES))
def test_bad_latent_files_are_one_error_naming_the_file(case, latents_file, bundle_dir, tmp_path, capsys):
    make, message = CASES[case]
    bad = make(latents_file)
    out = tmp_path / "out.wav"
    assert decode_cli.main([str(bad), "--model", str(bundle_dir), "-o", str(out)]) == 2
    one_error_line(capsys, str(bad), message)
    assert not out.exists()


def tiny_train(tmp_path: Path, *overrides: str):
    return run("vae-train", "trainer.max_steps=1", "tracking.enabled=false",
               f"trainer.out_dir={tmp_path / 'runs'}", *overrides, cwd=tmp_path)


def test_training_data_errors_are_exit_2_naming_the_file(tmp_path):
    done = tiny_train(tmp_path, "data.source=musdb", f"data.root={tmp_path / 'nowhere'}")
    assert done.returncode == 2 and "nowhere does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    root = tmp_path / "musdb"
    empty = root / "train" / "A Classic Education - NightOwl" / "mixture.wav"
    full = root / "train" / "ANiMAL - Clinic A" / "mixture.wav"
    for path, seconds in ((empty, 0.0), (full, 3.0)):
        path.parent.mkdir(parents=True)
        sf.write(path, np.zeros((int(seconds * 44100), 2), np.float32), 44100)
    done = tiny_train(tmp_path, "data.source=musdb", f"data.root={root}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert str(empty) in done.stderr and "0 frames" in done.stderr
    assert "Traceback" not in done.stderr
