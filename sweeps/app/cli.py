"""vae-app: serve the listening room (sweeps/app/page.py) with ``streamlit run``.

Every argument but -h/--help goes to ``streamlit run``, e.g.
``vae-app --server.port 8502 --server.headless true``.

Environment: VAE_APP_MODEL (the model preselected: bundle folder or model URI),
VAE_APP_BUNDLE_ROOTS (folders searched for bundles), MLFLOW_TRACKING_URI (registered models),
SWEEP_STORAGE and SWEEP_STATE_DIR (the sweeps to compare, as for every sweeps command),
VAE_APP_CACHE (bundles built from trial checkpoints)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from vae.cli import common

PAGE = Path(__file__).with_name("page.py")


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser("vae-app", __doc__)
    parser.usage = "vae-app [-h] [STREAMLIT_ARGS ...]"
    _, streamlit_args = parser.parse_known_args(argv)
    if importlib.util.find_spec("streamlit") is None:
        return common.fail("streamlit is not installed; expected it from the ui extra "
                           "(pip install -e '.[ui]')")
    command = [sys.executable, "-m", "streamlit", "run", str(PAGE), *streamlit_args]
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:  # Ctrl-C stops the server: not an error
        return 0


if __name__ == "__main__":
    common.run(main)
