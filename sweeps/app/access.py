"""What the page may read and fetch, fixed when the app starts (environment, set by ``vae-app``'s
flags): bundle and sweep folders only under their roots, MLflow only at the allowed tracking
URIs, uploads only up to a size. A path typed in the page that is outside the roots gets the same
message as one that does not exist, so the page cannot probe the server's files.

- ``VAE_APP_BUNDLE_ROOTS`` (os.pathsep-separated; default ./bundles, ./exports, ./models) and
  ``VAE_APP_MODEL`` (the one preselected model, allowed wherever it is).
- ``VAE_APP_SWEEP_ROOTS`` (os.pathsep-separated; default ``$SWEEP_STORAGE``, else ./sweep_results).
- ``VAE_APP_TRACKING_URIS`` (comma-separated) and ``MLFLOW_TRACKING_URI``; default sqlite:///mlflow.db.
- ``VAE_APP_MAX_UPLOAD_MB`` (default 50): the launcher passes it as ``server.maxUploadSize``
  and the page refuses a larger upload before reading it."""

from __future__ import annotations

import os
from pathlib import Path

from sweeps.layout import default_storage

BUNDLE_ROOTS_ENV, MODEL_ENV = "VAE_APP_BUNDLE_ROOTS", "VAE_APP_MODEL"
DEFAULT_BUNDLE_ROOTS = ("bundles", "exports", "models")
SWEEP_ROOTS_ENV = "VAE_APP_SWEEP_ROOTS"
TRACKING_URIS_ENV, TRACKING_ENV = "VAE_APP_TRACKING_URIS", "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD_MB = "VAE_APP_MAX_UPLOAD_MB", 50
# The vae-app flag that sets each variable: what messages tell a user to change.
FLAGS = {BUNDLE_ROOTS_ENV: "--bundle-root", SWEEP_ROOTS_ENV: "--sweep-root",
         TRACKING_URIS_ENV: "--tracking-uri", MAX_UPLOAD_ENV: "--max-upload-mb"}


def setting(env: str) -> str:
    """How a user sets ``env``: ``vae-app --sweep-root (or $VAE_APP_SWEEP_ROOTS)``."""
    return f"vae-app {FLAGS[env]} (or ${env})"


class NotAllowed(Exception):
    """A path or URI the page may not use (or that does not exist: the message is the same)."""


def _paths(env: str, default: tuple[str, ...]) -> list[Path]:
    raw = os.environ.get(env)
    return [Path(p).expanduser() for p in (raw.split(os.pathsep) if raw else default) if p]


def bundle_roots() -> list[Path]:
    return _paths(BUNDLE_ROOTS_ENV, DEFAULT_BUNDLE_ROOTS)


def sweep_roots() -> list[Path]:
    return _paths(SWEEP_ROOTS_ENV, (default_storage(),))


def confined(typed: str, roots: list[Path], env: str) -> Path:
    """The existing folder ``typed`` names, resolved (symlinks followed), when it is at or below
    one of ``roots``; else NotAllowed with one message whether or not it exists."""
    refused = NotAllowed(f"{typed or '(empty)'}: not a folder this app may read (it reads only "
                         f"folders under those given by {setting(env)} when it starts)")
    if not typed or "\0" in typed:
        raise refused
    try:
        folder = Path(typed).expanduser().resolve()
        allowed = any(folder.is_relative_to(root.resolve()) for root in roots)
        if not allowed or not folder.is_dir():
            raise refused
    except (OSError, RuntimeError):  # permission, symlink loop: the same answer
        raise refused from None
    return folder


def allowed_model(spec: str) -> str:
    """``spec`` when it is the preselected model or a folder under the bundle roots."""
    if spec and spec == os.environ.get(MODEL_ENV):
        return spec
    return str(confined(spec, bundle_roots(), BUNDLE_ROOTS_ENV))


def allowed_storage(typed: str) -> str | None:
    """The sweep storage folder ``typed`` names, confined to the sweep roots; None for a root
    that does not exist yet (the operator set it: no sweeps there is not a secret)."""
    roots = sweep_roots()
    if any(typed == str(root) for root in roots) and not Path(typed).expanduser().is_dir():
        return None
    return str(confined(typed, roots, SWEEP_ROOTS_ENV))


def tracking_uri_given() -> bool:
    """Whether the operator named any MLflow store (else the page would guess ./mlflow.db)."""
    return bool(os.environ.get(TRACKING_ENV) or os.environ.get(TRACKING_URIS_ENV, "").strip())


def tracking_uris() -> list[str]:
    """The MLflow tracking URIs the page may query, the default first."""
    extra = [u.strip() for u in os.environ.get(TRACKING_URIS_ENV, "").split(",") if u.strip()]
    first = os.environ.get(TRACKING_ENV) or (extra[0] if extra else DEFAULT_TRACKING_URI)
    return list(dict.fromkeys([first, *extra]))


def allowed_tracking_uri(uri: str | None) -> str:
    if uri not in tracking_uris():
        raise NotAllowed(f"tracking URI not allowed (the app queries only those given by "
                         f"{setting(TRACKING_URIS_ENV)} or ${TRACKING_ENV} when it starts)")
    return uri


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV)
    return int(float(raw) * 1024 * 1024) if raw else DEFAULT_MAX_UPLOAD_MB * 1024 * 1024


def upload_problem(name: str, size: int) -> str | None:
    """Why an upload of ``size`` bytes is refused before it is read or decoded."""
    limit = max_upload_bytes()
    if size > limit:
        return (f"{name}: {size / 2**20:.1f} MB; uploads are limited to {limit / 2**20:g} MB "
                f"({setting(MAX_UPLOAD_ENV)})")
    return None
