"""A crafted checkpoint (its unpickling creates a marker file) runs nothing on any load path: a
URL is refused before anything is fetched, and a local file is loaded weights-only everywhere
(vae-train resume, the train() a sweep trial calls, vae-export / bundle_from_checkpoint)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import MICRO
from tests.test_cli import run
from vae.config import ConfigError, load_config
from vae.inference import BundleError, bundle_from_checkpoint
from vae.training.train import train


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "global_step": 0, "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {"config": {}}, "payload": _Payload(marker)}, path)
    return path


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    ckpt = crafted_checkpoint(tmp_path / "x.ckpt", marker)
    torch.load(ckpt, weights_only=False)  # the payload is live: a full unpickling runs it
    assert marker.exists()
    marker.unlink()
    return ckpt, marker


@pytest.fixture
def server(crafted) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving the crafted checkpoint; yields (url, requests)."""
    body = crafted[0].read_bytes()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/x.ckpt", requests
    httpd.shutdown()
    httpd.server_close()


def tiny_args(tmp_path: Path) -> list[str]:
    overrides = {**MICRO, "trainer.max_steps": 2, "trainer.val_every_steps": 2,
                 "tracking.enabled": False, "trainer.out_dir": str(tmp_path / "runs")}
    return [f"{k}={v}" for k, v in overrides.items()]


@pytest.mark.parametrize("form", ["ckpt_path=", "--ckpt-path="])
def test_train_refuses_a_checkpoint_url_before_fetching_it(form, server, crafted, tmp_path):
    url, requests = server
    done = run("vae-train", *tiny_args(tmp_path), f"{form}{url}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path:") and "URL" in lines[0]
    assert not crafted[1].exists() and requests == []


def test_train_refuses_a_crafted_local_checkpoint(crafted, tmp_path):
    ckpt, marker = crafted
    done = run("vae-train", *tiny_args(tmp_path), f"ckpt_path={ckpt}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "would run code" in done.stderr and str(ckpt) in done.stderr
    assert not marker.exists()
    missing = run("vae-train", *tiny_args(tmp_path), f"ckpt_path={tmp_path / 'no.ckpt'}",
                  cwd=tmp_path)
    assert missing.returncode == 2 and "no such checkpoint file" in missing.stderr


def test_the_train_function_a_trial_calls_refuses_it_too(crafted, tmp_path):
    ckpt, marker = crafted
    config = load_config(None, tiny_args(tmp_path))
    with pytest.raises(ConfigError, match="would run code"):
        train(config, ckpt_path=str(ckpt))
    assert not marker.exists()


def test_export_refuses_a_crafted_checkpoint(crafted, tmp_path):
    ckpt, marker = crafted
    with pytest.raises(BundleError, match="not a checkpoint written by vae-train"):
        bundle_from_checkpoint(ckpt, tmp_path / "bundle")
    done = run("vae-export", str(ckpt), "-o", str(tmp_path / "bundle2"), cwd=tmp_path)
    assert done.returncode == 2 and str(ckpt) in done.stderr
    assert not marker.exists()


def test_a_real_checkpoint_still_resumes_weights_only(tmp_path):
    config = load_config(None, tiny_args(tmp_path))
    first = train(config, run_dir=tmp_path / "first")
    assert first.last_checkpoint and first.global_step == 2
    longer = config.override({"trainer.max_steps": 4})
    resumed = train(longer, ckpt_path=first.last_checkpoint, run_dir=tmp_path / "resumed")
    assert resumed.global_step == 4
