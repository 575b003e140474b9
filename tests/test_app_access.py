"""What the listening app may read, fetch and accept: bundle and sweep folders only under the roots
set at start (outside and missing: the same message), MLflow only at the URIs allowed at start
(a URI forced into the page is never contacted), uploads refused over the cap before decoding, the
app serving 127.0.0.1 unless told otherwise however it is started, and stopping when told."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from sweeps.app.access import NotAllowed, allowed_tracking_uri
from sweeps.app.cli import PAGE, streamlit_command
from tests.screenshot_app import REPO
from tests.test_app import bundle_dir, page, tone  # noqa: F401  (fixtures)

pytest.importorskip("streamlit")


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_a_bundle_outside_the_roots_gets_the_same_message_as_a_missing_one(page, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_text("{}")
    at = page.run()
    shown = {}
    for case, path in {"outside": outside, "missing": tmp_path / "nope",
                       "system": Path("/etc"), "escape": tmp_path / "no_roots" / ".." / "outside"}.items():
        at.text_input(key="bundle_path").set_value(str(path)).run()
        assert not at.exception and len(errors(at)) == 1, errors(at)
        shown[case] = errors(at)[0].replace(str(path), "PATH")
    assert len(set(shown.values())) == 1 and "not a folder this app may read" in shown["outside"]


def test_a_sweep_storage_outside_the_roots_gets_the_same_message_as_a_missing_one(page, tmp_path):
    outside = tmp_path / "elsewhere" / "s"
    outside.mkdir(parents=True)
    (outside / "sweep.json").write_text("{}")
    at = page.run()
    shown = []
    for path in (tmp_path / "elsewhere", tmp_path / "missing", Path("/")):
        at.text_input(key="sweep_storage").set_value(str(path)).run()
        assert not at.exception
        shown.append(errors(at)[0].replace(str(path), "PATH"))
    assert len(set(shown)) == 1 and "vae-app --sweep-root" in shown[0]  # the flag a user typed
    assert not at.selectbox  # no sweep was listed from the folder outside the roots


class Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        Recorder.requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_tracking_uri_forced_into_the_page_is_never_used(page, http_server):
    at = page.run()
    at.radio(key="model_kind").set_value("Registered model (MLflow)").run()
    assert "tracking_uri" not in [w.key for w in at.text_input]  # no free-text box for it
    assert at.selectbox(key="tracking_uri").options == [os.environ["MLFLOW_TRACKING_URI"]]
    at.selectbox(key="tracking_uri").set_value(os.environ["MLFLOW_TRACKING_URI"]).run()
    assert not at.exception
    for forced in (http_server, "sqlite:////etc/passwd"):  # what a page box would have sent
        with pytest.raises(NotAllowed):
            allowed_tracking_uri(forced)
    assert Recorder.requests == []  # the server was never asked


def test_an_oversize_upload_is_refused_before_decoding(page, monkeypatch):
    monkeypatch.setenv("VAE_APP_MAX_UPLOAD_MB", "1")
    buffer = io.BytesIO()
    sf.write(buffer, tone(8.0, 44100, 1, 440.0), 44100, format="WAV", subtype="PCM_16")  # 0.7 MB
    small = buffer.getvalue()
    at = page.run()
    at.file_uploader(key="upload_a").upload("small.wav", small, "audio/wav").run()
    assert not at.exception and not at.error, errors(at)
    big = small + small  # a valid-looking 1.4 MB file: refused by size, never read as audio
    at.file_uploader(key="upload_a").upload("big.wav", big, "audio/wav").run()
    assert not at.exception
    assert any("big.wav" in e and "limited to 1 MB" in e for e in errors(at)), errors(at)
    assert not at.metric  # nothing was decoded or reconstructed


def test_the_launcher_binds_loopback_and_caps_uploads_by_default():
    command, env = streamlit_command([])
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.maxUploadSize"] == env["VAE_APP_MAX_UPLOAD_MB"] == "50"
    command, env = streamlit_command(["--server.address=0.0.0.0", "--max-upload-mb", "5",
                                      "--sweep-root", "/srv/sweeps", "--tracking-uri", "http://m:5000"])
    assert "--server.address" not in command and "--server.address=0.0.0.0" in command
    assert command[command.index("--server.maxUploadSize") + 1] == "5"
    assert env["VAE_APP_SWEEP_ROOTS"] == "/srv/sweeps" and env["MLFLOW_TRACKING_URI"] == "http://m:5000"


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel lists them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


LOOPBACK = {socket.inet_aton("127.0.0.1")[::-1].hex().upper()}


@contextlib.contextmanager
def started(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, int]]:
    """``command`` plus a free --server.port, in its own session; yields (process, port) once it
    listens."""
    from tests.screenshot_app import _stop, free_port

    port = free_port()
    process = subprocess.Popen([*command, "--server.port", str(port), "--server.headless", "true"],
                               cwd=str(cwd), env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not listening_addresses(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        yield process, port
    finally:
        _stop(process)


def test_the_served_app_listens_on_loopback_only(bundle_dir, tmp_path):
    with started([sys.executable, "-m", "sweeps.app.cli"], REPO,
                 {"VAE_APP_MODEL": str(bundle_dir)}) as (_, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
            assert r.read().strip() == b"ok"
        assert listening_addresses(port) == LOOPBACK


def test_streamlit_run_from_the_project_root_listens_on_loopback_only(bundle_dir):
    """As the page's docstring says to start it: the root's .streamlit/config.toml binds loopback."""
    with started([sys.executable, "-m", "streamlit", "run", "sweeps/app/page.py"], REPO,
                 {"VAE_APP_MODEL": str(bundle_dir)}) as (_, port):
        assert listening_addresses(port) == LOOPBACK


def test_the_page_served_on_every_interface_refuses_to_run(bundle_dir, tmp_path):
    """Started elsewhere with no address, Streamlit listens everywhere: the page shows why and
    how to start it, and renders nothing else."""
    from tests.screenshot_app import chromium_page, find_chromium, wait_rendered

    if find_chromium() is None:
        pytest.skip("no chromium (.ci/setup --tests installs it)")
    with started([sys.executable, "-m", "streamlit", "run", str(PAGE)], tmp_path,
                 {"VAE_APP_MODEL": str(bundle_dir)}) as (_, port):
        assert listening_addresses(port) - LOOPBACK  # the premise: not loopback only
        with chromium_page(f"http://127.0.0.1:{port}") as browser:
            state = wait_rendered(browser)
    assert any("listens on every network interface" in e for e in state["errors"]), state
    assert not state["audio"] and not state["metrics"]  # nothing past the refusal was rendered


def test_stopping_vae_app_stops_the_server(bundle_dir):
    """SIGTERM to the vae-app process itself (not its group), as a service manager sends it."""
    launcher = str(Path(sys.executable).with_name("vae-app"))
    with started([launcher], REPO, {"VAE_APP_MODEL": str(bundle_dir)}) as (process, port):
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while listening_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not listening_addresses(port), "the server outlived vae-app"
        assert process.wait(timeout=5) is not None
