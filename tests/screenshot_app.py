"""Serve the app with ``streamlit run`` on 127.0.0.1 and screenshot it in headless Chromium.

    python tests/screenshot_app.py --model BUNDLE_DIR --out app.png [--sweeps STORAGE]

Chromium is driven over the DevTools protocol: the page is captured only once Streamlit has
finished running the script and every image has loaded (a plain ``--screenshot`` catches the loading
skeleton). The page is then inspected: an exception box, an error alert or a missing title is a
failure (exit 1), so a broken page is caught, not just photographed. With ``--sweeps`` the
"A/B sweep trials" tab is opened and captured too (``OUT`` with ``-ab`` before the suffix).

Needs Debian's Chromium: ``apt-get install -y chromium``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = "sweeps.app.cli"  # vae-app: `streamlit run sweeps/app/page.py` plus the args given
TITLE = "Audio VAE listening room"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars"]
APT_LINE = "apt-get install -y chromium"

# What the page shows, read in the browser: Streamlit's own test ids.
PAGE_STATE_JS = """(() => {
  const texts = sel => [...document.querySelectorAll(sel)].map(e => e.innerText.slice(0, 500));
  const images = [...document.querySelectorAll('[data-testid="stImage"] img, img[src*="/media/"]')];
  return {
    title: texts('h1').join(' | '),
    running: !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"], [aria-label="Running..."]'),
    skeleton: !!document.querySelector('[data-testid="stAppSkeleton"], [data-testid="stSkeleton"]'),
    exceptions: texts('[data-testid="stException"]'),
    errors: texts('[data-testid="stAlertContentError"]'),
    images: images.length,
    images_loaded: images.every(i => i.complete && i.naturalWidth > 0),
    audio: document.querySelectorAll('audio').length,
    metrics: texts('[data-testid="stMetric"]'),
    tabs: texts('[data-testid="stTab"], button[role="tab"]'),
    text_length: document.body ? document.body.innerText.length : 0,
  };
})()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop a process this module started, and its process group (it was started in its own)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def serve_app(env: dict[str, str] | None = None, timeout: float = 120.0,
              log_path: Path | None = None) -> Iterator[str]:
    """The app served by its launcher (vae-app) on 127.0.0.1 at a free port; yields its URL once
    healthy."""
    port = free_port()
    command = [sys.executable, "-m", LAUNCHER, "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=str(REPO),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode} before serving"
                                   + (f"; log: {log_path}" if log_path else ""))
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not become healthy at {url} in {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)
        if log is not subprocess.DEVNULL:
            log.close()


class DevTools:
    """A minimal DevTools-protocol client of one page target."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket  # a websockets.sync client connection
        self.next_id = 0

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message_id = self.next_id
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


@contextlib.contextmanager
def chromium_page(url: str, width: int = 1400, height: int = 2200,
                  chromium: str | None = None) -> Iterator[DevTools]:
    """Headless Chromium (fresh profile) showing ``url``; yields a DevTools client of the page."""
    from websockets.sync.client import connect

    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError(f"no chromium on PATH ({APT_LINE})")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    port = free_port()
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
         "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        target = None
        while target is None:
            if process.poll() is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
                    pages = [t for t in json.loads(reply.read()) if t.get("type") == "page"]
                target = pages[0] if pages else None
            except OSError:
                pass
            if target is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("chromium's DevTools endpoint did not come up")
                time.sleep(0.3)
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket_:
            client = DevTools(socket_)
            client.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
            yield client
    finally:
        _stop(process)
        shutil.rmtree(profile, ignore_errors=True)


def wait_rendered(page: DevTools, timeout: float = 120.0, settle: float = 2.0) -> dict[str, Any]:
    """Poll until the title is shown, the script is not running, images have loaded and the page
    text has stopped changing for ``settle`` seconds; returns the page state."""
    deadline = time.monotonic() + timeout
    last_length, stable_since = -1, time.monotonic()
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(PAGE_STATE_JS) or {}
        if state.get("exceptions"):
            return state  # broken: no need to wait any longer
        ready = (TITLE in (state.get("title") or "") and not state.get("running")
                 and not state.get("skeleton") and state.get("images_loaded"))
        if state.get("text_length") != last_length:
            last_length, stable_since = state.get("text_length"), time.monotonic()
        elif ready and time.monotonic() - stable_since >= settle:
            return state
        time.sleep(0.5)
    state["timed_out"] = True
    return state


def screenshot(page: DevTools, out: Path) -> Path:
    data = page.call("Page.captureScreenshot", format="png")["data"]
    import base64

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(data))
    return out


def open_tab(page: DevTools, label: str) -> bool:
    return bool(page.evaluate(
        "(() => { const tab = [...document.querySelectorAll('[data-testid=\"stTab\"], button[role=\"tab\"]')]"
        f".find(b => b.innerText.includes({json.dumps(label)}));"
        " if (tab) { tab.click(); return true; } return false; })()"))


def problems(state: dict[str, Any]) -> list[str]:
    """Why a page state is broken (empty when it is fine)."""
    found = []
    if state.get("timed_out"):
        found.append("the page did not finish rendering")
    if TITLE not in (state.get("title") or ""):
        found.append(f"title {TITLE!r} not shown (h1: {state.get('title')!r})")
    found += [f"exception on the page: {text}" for text in state.get("exceptions") or []]
    found += [f"error on the page: {text}" for text in state.get("errors") or []]
    return found


def capture_app(out: Path, env: dict[str, str], ab_tab: bool = False,
                log_path: Path | None = None) -> dict[str, Any]:
    """Serve, render, inspect and capture; returns page states and screenshot paths."""
    report: dict[str, Any] = {}
    with serve_app(env, log_path=log_path) as url, chromium_page(url) as page:
        state = wait_rendered(page)
        report["main"] = {"state": state, "png": str(screenshot(page, out)), "problems": problems(state)}
        if ab_tab:
            if not open_tab(page, "A/B sweep trials"):
                report["ab"] = {"problems": ["no A/B tab"]}
            else:
                time.sleep(1.0)
                state = wait_rendered(page)
                ab_out = out.with_name(f"{out.stem}-ab{out.suffix}")
                report["ab"] = {"state": state, "png": str(screenshot(page, ab_out)),
                                "problems": problems(state)}
        report["url"] = url
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder or model URI (VAE_APP_MODEL)")
    parser.add_argument("--out", default="app.png", help="screenshot file")
    parser.add_argument("--sweeps", help="sweep storage path; also capture the A/B tab")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print(f"error: chromium not found; install it with: {APT_LINE}", file=sys.stderr)
        return 2
    env = {"VAE_APP_MODEL": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model}
    if args.sweeps:
        env["SWEEP_STORAGE"] = str(Path(args.sweeps).resolve())
    report = capture_app(Path(args.out), env, ab_tab=bool(args.sweeps))
    print(json.dumps(report, indent=2))
    broken = [p for part in ("main", "ab") for p in report.get(part, {}).get("problems", [])]
    for problem in broken:
        print(f"broken page: {problem}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
