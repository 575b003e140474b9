"""What every command shares: the flag names (-o/--out, --device, --tracking-uri), the parser
layout, and ONE error convention — a user error (bad config key, missing or unreadable file,
unusable bundle, dataset or latent file) is one line ``error: ...`` on stderr and exit status 2;
anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

USER_ERROR_EXIT = 2
Main = Callable[[Sequence[str] | None], int]


# (package, class) of each user-error type. Looked up in sys.modules rather than imported: an
# exception can only have been raised once its module was imported, and ``--help`` should not pay
# for torch, MLflow or musdb (nor break when an unrelated package fails to import).
USER_ERROR_TYPES = (("vae.config", "ConfigError"), ("vae.data.errors", "DatasetError"),
                    ("vae.inference", "AudioError"), ("vae.inference", "BundleError"),
                    ("vae.inference", "LatentFileError"), ("vae.codec", "CodecError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user asked for something unusable"; FileNotFoundError
    stands for a path the user named (library code checks its own files before opening them)."""
    types: list[type[BaseException]] = [FileNotFoundError]
    for package, name in USER_ERROR_TYPES:
        error = getattr(sys.modules.get(package), name, None)
        if error is not None:
            types.append(error)
    return tuple(types)


def positive_problem(flag: str, value: float | None, unit: str = "") -> str | None:
    """Why ``value`` of ``flag`` is not a positive finite number (None when it is, or unset)."""
    if value is None or (math.isfinite(value) and value > 0):
        return None
    return f"{flag} {value:g}: expected a positive number{' of ' + unit if unit else ''}"


def dither_seed(text: str) -> int | None:
    """A ``--dither-seed`` value: a seed from 0 to 2**63 - 1, or ``none`` for no dither."""
    if text.lower() == "none":
        return None
    if text.isascii() and text.isdigit() and int(text) < 1 << 63:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: expected a seed from 0 to 2**63 - 1, or 'none'")


def writable_problem(what: str, folder: str | Path) -> str | None:
    """Why ``folder`` (named ``what``, e.g. ``-o``) could not be created and written, None when it
    could: it is a file, or its nearest existing parent is a file or not writable."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        why = "a file, not a folder" if existing == folder else f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = "permission denied" if existing == folder else f"{existing}: permission denied"
    else:
        return None
    return f"{what} {folder}: not writable ({why})"


def fail(message: str) -> int:
    """Print a user error as one line on stderr; the exit status for it."""
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


def exits_on_user_error(main: Main) -> Main:
    """Wraps a command's ``main(argv) -> int`` so user errors print one line and return 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except Exception as exc:
            if isinstance(exc, user_errors()):
                return fail(str(exc) or type(exc).__name__)
            raise

    return wrapper


def build_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the docstring's first line and epilog the rest."""
    first, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(prog=prog, description=first, epilog=rest.strip() or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_out(parser: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    parser.add_argument("-o", "--out", required=required, help=help)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 "
                        "(default: cpu)")


def add_tracking_uri(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--tracking-uri", help=help or "MLflow tracking URI, for models:/ and "
                        "runs:/ model URIs (default: $MLFLOW_TRACKING_URI)")


def add_model_runtime(parser: argparse.ArgumentParser, default_chunk_seconds: float) -> None:
    """The flags of every command that runs a model over audio: chunk length, tracking URI, device."""
    parser.add_argument("--chunk-seconds", type=float, default=default_chunk_seconds,
                        help="audio processed per model call (memory bound; default %(default)s)")
    add_tracking_uri(parser)
    add_device(parser)


def runnable(script: str, *args: str | Path) -> str:
    """A shell line that runs console script ``script`` with ``args`` from any folder, whether or
    not the virtualenv is on PATH: the script beside this Python (where pip puts it, installed or
    not yet), else ``python -m`` its module. Every command printed for a user to paste goes
    through here."""
    beside = Path(sys.executable).parent / script
    head = [str(beside)]
    if not beside.is_file():
        from importlib.metadata import entry_points

        found = list(entry_points(group="console_scripts", name=script))
        head = [sys.executable, "-m", found[0].module] if found else head
    return shlex.join([*head, *map(str, args)])


def run(main: Main) -> None:
    """``if __name__ == "__main__": run(main)``: the process exits with main's status."""
    sys.exit(main(None))
