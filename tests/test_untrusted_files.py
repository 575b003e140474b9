"""Files a user is handed (a bundle folder, a latent file) are read as untrusted: crafted bundles
are one error naming the file and exit 2, and a latent file never makes vae-decode contact a host
it names. (Latent files with impossible arrays or metadata: test_bad_audio_latents.py.)"""

from __future__ import annotations

import http.server
import pickle
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.test_bad_audio_latents import latents_file, metadata_of, with_metadata  # noqa: F401
from tests.test_inference import SR, bundle_dir, tone  # noqa: F401 (fixtures)
from tests.test_untrusted_checkpoints import _Payload
from vae.cli import decode as decode_cli
from vae.cli import encode as encode_cli
from vae.cli import export as export_cli
from vae.inference import BundleError, load_bundle
from vae.inference.mlflow_model import bundle_in_model_dir

# An alias bomb of 9^7 (4.8 million) values in 300 bytes.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg"))


def error_of(capsys) -> str:
    """stderr of a command that refused its input: an ``error:`` line first, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def config_with(bundle: Path, text: Callable[[str], str]) -> Path:
    (bundle / "config.yaml").write_text(text((bundle / "config.yaml").read_text()))
    return bundle


def other_shape_weights(bundle: Path) -> Path:
    """Weights of a model with another latent size, under this bundle's config."""
    config = yaml.safe_load((bundle / "config.yaml").read_text())
    config["model"]["latent_dim"] = 7
    (bundle / "config.yaml").write_text(yaml.safe_dump(config))
    return bundle


BUNDLES = {
    "pickle weights": (lambda b, m: (b / "model.safetensors").write_bytes(
        pickle.dumps({"x": _Payload(m)})), "model.safetensors: not a safetensors weights file"),
    "YAML tag": (lambda b, m: config_with(b, lambda t: f"model: !!python/object/apply:open ['{m}', 'w']\n"),
                 "config.yaml: not valid YAML: could not determine a constructor for the tag"),
    "alias bomb": (lambda b, m: config_with(b, lambda t: ALIAS_BOMB),
                   "config.yaml: e: more than 20000 values once its aliases are expanded"),
    "duplicate model key": (lambda b, m: config_with(b, lambda t: t + "model:\n  latent_dim: 7\n"),
                            "config.yaml: model: duplicate key"),
    "unknown key": (lambda b, m: config_with(b, lambda t: t + "bogus: 1\n"),
                    "bogus: unknown key"),
    "wrong type": (lambda b, m: config_with(b, lambda t: t.replace("latent_dim: 4", "latent_dim: four")),
                   "model.latent_dim: Input should be a valid integer"),
    "weights of another model": (lambda b, m: other_shape_weights(b),
                                 "model.safetensors: weights do not fit the model in config.yaml"),
    "metrics duplicate key": (lambda b, m: (b / "metrics.json").write_text('{"a": 1, "a": 2}'),
                              "metrics.json: a: duplicate key"),
    "metrics not an object": (lambda b, m: (b / "metrics.json").write_text("[1, 2]"),
                              "metrics.json: expected a JSON object, got list"),
}


@pytest.mark.parametrize("case", list(BUNDLES))
def test_a_crafted_bundle_is_one_error_naming_its_file(case, bundle_dir, tmp_path, capsys):
    bundle = shutil.copytree(bundle_dir, tmp_path / "bundle")
    marker = tmp_path / "PWNED"
    craft, message = BUNDLES[case]
    craft(bundle, marker)
    source = tmp_path / "in.wav"
    sf.write(source, tone(0.3, SR, 2), SR)
    out = tmp_path / "out.npz"
    assert encode_cli.main([str(source), "--model", str(bundle), "-o", str(out)]) == 2
    err = error_of(capsys)
    assert str(bundle) in err and message in err, err
    assert not out.exists() and not marker.exists()
    with pytest.raises(BundleError) as refused:  # the library says the same as the command
        load_bundle(bundle)
    assert message in str(refused.value)


def test_a_pyfunc_model_whose_bundle_path_leads_outside_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text(yaml.safe_dump(
        {"flavors": {"python_function": {"artifacts": {"bundle": {"path": "../../etc"}}}}}))
    with pytest.raises(BundleError, match="leads out of the model's folder"):
        bundle_in_model_dir(model)
    (model / "MLmodel").write_text("flavors: {python_function: {artifacts: {bundle: {path: b}}}}\n"
                                   "flavors: {}\n")
    with pytest.raises(BundleError, match="flavors: duplicate key"):
        bundle_in_model_dir(model)


def test_a_checkpoint_with_an_invalid_config_is_one_error(tmp_path, capsys):
    ckpt = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "global_step": 0,
                "hyper_parameters": {"config": {"model": {"latent_dim": "four"}}}}, ckpt)
    assert export_cli.main([str(ckpt), "-o", str(tmp_path / "bundle")]) == 2
    err = error_of(capsys)
    assert f"{ckpt}: hyper_parameters.config" in err and "model.latent_dim" in err, err
    assert not (tmp_path / "bundle").exists()


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every request; yields (base URL, requests)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def with_model_spec(latents: Path, spec: object) -> Path:
    return with_metadata(latents, model={**metadata_of(latents)["model"], "spec": spec})


def test_a_url_in_a_latent_file_is_refused_and_never_contacted(latents_file, listener, tmp_path,
                                                              capsys, monkeypatch):
    base, requests = listener
    # the path MLflow's HTTP artifact store lists first: followed, it makes a request here
    crafted = with_model_spec(latents_file, f"{base}/api/2.0/mlflow-artifacts/artifacts/bundle")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.wav"
    assert decode_cli.main([str(crafted), "-o", str(out)]) == 2
    err = error_of(capsys)
    assert f"{crafted}: records the model '{base}" in err and "a URL, which is not fetched" in err
    assert requests == [] and not out.exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("spec, message", [
    ("models:/tiny-vae@champion", "resolved only through your own tracking store"),
    ("bundles/tiny", "neither an absolute bundle folder nor a models:/ or runs:/ URI"),
    (["not", "a", "string"], "metadata.model.spec must be a string"),
])
def test_a_model_reference_decode_cannot_trust_is_refused(spec, message, latents_file, tmp_path,
                                                          capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    crafted = with_model_spec(latents_file, spec)
    assert decode_cli.main([str(crafted), "-o", str(tmp_path / "out.wav")]) == 2
    assert message in error_of(capsys)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out.wav").exists()


def test_the_recorded_bundle_folder_is_followed_and_named(latents_file, bundle_dir, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert decode_cli.main([str(latents_file), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"model {bundle_dir.resolve()} (recorded in {latents_file}; --model overrides)" in err
    assert sf.info(out).frames == metadata_of(latents_file)["length"]
    assert np.isfinite(sf.read(out)[0]).all()
