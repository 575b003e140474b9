"""The listing of a folder of audio files, with a cache so a sweep of many trials reads each
file's header once: a cached entry is reused while the file's size and modification time match."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from vae.audio_files import AUDIO_EXTENSIONS
from vae.data.errors import DatasetError

CACHE_FORMAT = "audio-listing/1"
DEFAULT_CACHE_DIR = Path("~/.cache/audio-vae/listings")


@dataclass(frozen=True)
class AudioFileEntry:
    path: str  # relative to the listed root, with forward slashes
    frames: int
    sample_rate: int
    channels: int
    size: int
    mtime_ns: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Listing:
    root: Path
    files: list[AudioFileEntry]
    probed: int  # headers read this time; 0 when the cache held every file


def cache_file(root: Path, cache_dir: str | Path | None) -> Path:
    folder = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR.expanduser()
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return folder / f"{key}.json"


def _read_cache(path: Path, root: Path) -> dict[str, AudioFileEntry]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache, or an unreadable one: list afresh
    if data.get("format") != CACHE_FORMAT or data.get("root") != str(root.resolve()):
        return {}
    try:
        return {entry["path"]: AudioFileEntry(**entry) for entry in data["files"]}
    except (KeyError, TypeError):
        return {}


def _write_cache(path: Path, root: Path, files: list[AudioFileEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CACHE_FORMAT, "root": str(root.resolve()),
               "files": [asdict(entry) for entry in files]}
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload))
    os.replace(partial, path)  # atomic: trials listing at once never read half a file


def _probe(path: Path, relative: str, stat: os.stat_result) -> AudioFileEntry:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"corrupt or unreadable audio file {path}: {exc}") from exc
    return AudioFileEntry(relative, int(info.frames), int(info.samplerate), int(info.channels),
                          stat.st_size, stat.st_mtime_ns)


def list_audio_folder(root: str | Path, cache_dir: str | Path | None = None) -> Listing:
    """Every audio file under ``root`` (recursively, by extension), sorted by path, with its
    header; unreadable files are a DatasetError naming them."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root {root} does not exist or is not a folder")
    cache = cache_file(root, cache_dir)
    cached = _read_cache(cache, root)
    files, probed = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        if not path.is_file():
            continue
        relative, stat = path.relative_to(root).as_posix(), path.stat()
        entry = cached.get(relative)
        if entry is None or (entry.size, entry.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            entry, probed = _probe(path, relative, stat), probed + 1
        files.append(entry)
    if not files:
        raise DatasetError(f"no audio files under {root} (looked for {', '.join(AUDIO_EXTENSIONS)})")
    if probed or len(files) != len(cached):
        _write_cache(cache, root, files)
    return Listing(root, files, probed)
