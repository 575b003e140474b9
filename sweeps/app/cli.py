"""vae-app: serve the listening room (sweeps/app/page.py) with ``streamlit run``.

The process becomes the Streamlit server (exec), so stopping vae-app (Ctrl-C, SIGTERM from a
service manager or a script) stops the server. Serves 127.0.0.1 only unless told otherwise (``--server.address 0.0.0.0``): the settings in
sweeps/app/streamlit.toml are passed as flags unless given here. The page reads bundles and sweeps
only under the roots given here (or in the environment), queries MLflow only at the tracking URIs
given here, and refuses uploads over --max-upload-mb before decoding them. Every other argument
goes to ``streamlit run``, e.g. ``vae-app --server.port 8502 --server.headless true``.

Environment (each flag sets its variable for the page): VAE_APP_MODEL (the model preselected:
bundle folder or model URI, allowed wherever it is), VAE_APP_BUNDLE_ROOTS (folders searched for
bundles; default ./bundles ./exports ./models), VAE_APP_SWEEP_ROOTS (folders the sweep storage
box may name; default $SWEEP_STORAGE), MLFLOW_TRACKING_URI and VAE_APP_TRACKING_URIS (the MLflow
stores the page may query), SWEEP_STORAGE and SWEEP_STATE_DIR (as for every sweeps command),
VAE_APP_CACHE (bundles built from trial checkpoints), VAE_APP_MAX_UPLOAD_MB (default 50)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

from sweeps.app import access
from vae.cli import common

PAGE = Path(__file__).with_name("page.py")
CONFIG = Path(__file__).with_name("streamlit.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser("vae-app", __doc__)
    parser.usage = "vae-app [-h] [--bundle-root DIR] [--sweep-root DIR] [--tracking-uri URI] " \
                   "[--max-upload-mb MB] [STREAMLIT_ARGS ...]"
    parser.add_argument(access.FLAGS[access.BUNDLE_ROOTS_ENV], action="append", metavar="DIR",
                        help=f"a folder the page may load bundles from (repeatable; "
                        f"${access.BUNDLE_ROOTS_ENV})")
    parser.add_argument(access.FLAGS[access.SWEEP_ROOTS_ENV], action="append", metavar="DIR",
                        help=f"a folder of sweeps the page may read (repeatable; "
                        f"${access.SWEEP_ROOTS_ENV})")
    parser.add_argument(access.FLAGS[access.TRACKING_URIS_ENV], action="append", metavar="URI",
                        help="an MLflow store the page may query, the first one the default "
                        f"(repeatable; ${access.TRACKING_ENV}, ${access.TRACKING_URIS_ENV})")
    parser.add_argument(access.FLAGS[access.MAX_UPLOAD_ENV], type=int, metavar="MB",
                        help=f"largest upload (default {access.DEFAULT_MAX_UPLOAD_MB}; "
                        f"${access.MAX_UPLOAD_ENV})")
    return parser


def shipped_flags(config: Path = CONFIG) -> dict[str, str]:
    """``{"--server.address": "127.0.0.1", ...}`` from the shipped Streamlit settings."""
    settings = tomllib.loads(config.read_text())
    return {f"--{section}.{key}": str(value).lower() if isinstance(value, bool) else str(value)
            for section, values in settings.items() for key, value in values.items()}


def streamlit_command(argv: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command and the page's environment for vae-app's arguments."""
    args, streamlit_args = build_parser().parse_known_args(argv)
    env = dict(os.environ)
    if args.bundle_root:
        env[access.BUNDLE_ROOTS_ENV] = os.pathsep.join(str(Path(p).resolve()) for p in args.bundle_root)
    if args.sweep_root:
        env[access.SWEEP_ROOTS_ENV] = os.pathsep.join(str(Path(p).resolve()) for p in args.sweep_root)
    if args.tracking_uri:
        env[access.TRACKING_ENV] = args.tracking_uri[0]
        env[access.TRACKING_URIS_ENV] = ",".join(args.tracking_uri)
    flags = shipped_flags()
    upload_mb = args.max_upload_mb or int(float(env.get(access.MAX_UPLOAD_ENV) or
                                                 flags["--server.maxUploadSize"]))
    env[access.MAX_UPLOAD_ENV] = str(upload_mb)
    flags["--server.maxUploadSize"] = str(upload_mb)  # the server's cap = the page's check
    given = {arg.split("=", 1)[0] for arg in streamlit_args if arg.startswith("--")}
    defaults = [part for flag, value in flags.items() if flag not in given for part in (flag, value)]
    return [sys.executable, "-m", "streamlit", "run", str(PAGE), *defaults, *streamlit_args], env


def main(argv: list[str] | None = None) -> int:
    command, env = streamlit_command(argv)
    if importlib.util.find_spec("streamlit") is None:
        return common.fail("streamlit is not installed; expected it from the ui extra "
                           "(pip install -e '.[ui]')")
    # Become the server (same pid): a signal that stops vae-app stops Streamlit, no orphan left.
    os.execve(command[0], command, env)


if __name__ == "__main__":
    common.run(main)
