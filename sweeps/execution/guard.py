"""What sweep-run checks before Ray starts, and the lock that keeps one driver per sweep.

- :func:`driver_lock`: an exclusive ``flock`` on STATE/NAME/driver.lock (name: sweeps.layout),
  holding the driver's pid and host. The kernel drops the lock when the driver dies (even by
  SIGKILL), so a dead driver's lock is taken over by the next run (``--resume``); a live one makes
  the second driver fail with the holder named.
- :func:`storage_problem`: the storage and state folders can be created and written (found with
  vae.cli.common.writable_problem, which creates nothing).
- :func:`tracking_problem`: the MLflow store answers within a few seconds (an http server is
  pinged with a short timeout instead of MLflow's minutes of retries).
- :func:`placement_problem`: the cluster can place one trial's workers at all.
- :func:`interruption_watch`: Ctrl-C stops the running sweep resumably."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweeps.layout import LayoutError, SweepPaths
from vae.cli.common import writable_problem

TRACKING_TIMEOUT_S = 5.0
logger = logging.getLogger(__name__)


class UnplaceableTrial(LayoutError):
    """The cluster can never place one trial (Tune would wait for it forever)."""


def placement_problem(where: str, cpu: float, gpu: float, workers: int,
                      nodes: list[dict[str, float]]) -> str | None:
    """Why ``workers`` processes of ``cpu`` CPUs and ``gpu`` GPUs each can never be placed on
    ``nodes`` (each node's total resources, as Ray lists them), or None. Each worker sits on one
    node; together they may span several."""
    fits = [min(node.get("CPU", 0) // cpu if cpu else workers,
                node.get("GPU", 0) // gpu if gpu else workers) for node in nodes]
    if sum(fits) >= workers:
        return None
    cpus, gpus = sum(n.get("CPU", 0) for n in nodes), sum(n.get("GPU", 0) for n in nodes)
    return (f"{where}: resources: {workers} worker(s) of {cpu:g} CPU and {gpu:g} GPU each, but "
            f"the cluster's {len(nodes)} node(s) ({cpus:g} CPUs, {gpus:g} GPUs) can place "
            f"{int(sum(fits))}; lower resources.workers, cpu or gpu, or add nodes")


class SweepLocked(LayoutError):
    """Another live driver holds the sweep's lock."""


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"


@contextlib.contextmanager
def driver_lock(paths: SweepPaths) -> Iterator[Path]:
    """Hold the sweep's driver lock for the block; SweepLocked when a live driver holds it."""
    lock_file = paths.lock_file
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepLocked(
                f"sweep {paths.name!r} is already being run by {_holder(lock_file)} "
                f"(lock {lock_file}); wait for it, or stop it and pass --resume") from None
        os.ftruncate(fd, 0)  # a dead driver's pid/host is replaced by ours
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield lock_file
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race a new driver)


def storage_problem(paths: SweepPaths) -> str | None:
    """Why the sweep's storage or state folder is not writable (object storage is left to Ray)."""
    folders = [("--storage-path", Path(paths.storage_path))] if paths.is_local else []
    folders.append(("sweep state folder", paths.state_dir.parent))
    return next(filter(None, (writable_problem(what, folder) for what, folder in folders)), None)


def _ping_http(tracking_uri: str, timeout: float) -> str | None:
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            if reply.status == 200:
                return None
            return f"answered {reply.status} at {url}"
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code} at {url}"
    except (OSError, ValueError) as exc:  # refused, timed out, DNS, bad URL
        return f"no answer within {timeout:g} s at {url} ({getattr(exc, 'reason', exc)})"


def tracking_problem(tracking_uri: str, timeout: float = TRACKING_TIMEOUT_S) -> str | None:
    """Why the MLflow store at ``tracking_uri`` cannot be used (None when it answers)."""
    if tracking_uri.startswith(("http://", "https://")):
        why = _ping_http(tracking_uri, timeout)
        return f"MLflow tracking server {tracking_uri}: {why}" if why else None
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # sqlalchemy, OSError, MlflowException: all mean "cannot track"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"MLflow tracking store {tracking_uri}: {first[:300]}"
    return None


@contextlib.contextmanager
def interruption_watch() -> Iterator[threading.Event]:
    """An event set when SIGINT (Ctrl-C) arrives during the block. Tune's own SIGINT handler stops
    the run gracefully but returns as if it had ended, so ours records the interruption and asks
    Tune to stop through SIGUSR1 (the same graceful stop); a second Ctrl-C raises at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals can only be caught in the main thread
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        logger.warning("interrupted: stopping the sweep resumably (Ctrl-C again to abort)")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    previous = signal.signal(signal.SIGINT, on_sigint)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune keeps ours, listens on SIGUSR1
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env
