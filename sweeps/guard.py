"""What sweep-run checks before Ray starts, and the lock that keeps one driver per sweep.

- :func:`driver_lock`: an exclusive ``flock`` on STATE/NAME/driver.lock (name: sweeps.layout),
  holding the driver's pid and host. The kernel drops the lock when the driver dies (even by
  SIGKILL), so a dead driver's lock is taken over by the next run (``--resume``); a live one makes
  the second driver fail with the holder named.
- :func:`storage_problem`: the storage and state folders can be created and written (found with
  vae.cli.common.writable_problem, which creates nothing).
- :func:`tracking_problem`: the MLflow store answers within a few seconds (an http server is
  pinged with a short timeout instead of MLflow's minutes of retries)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from sweeps.layout import LayoutError, SweepPaths
from vae.cli.common import writable_problem

TRACKING_TIMEOUT_S = 5.0


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
