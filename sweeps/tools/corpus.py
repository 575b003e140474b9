"""Build a folder corpus of recorded music from Debian packages, for CPU-scale studies:
``sweep-corpus -o corpus/ [--install]``, then train with ``data.source=folder data.root=corpus``.

Only the five packages below are used (about 8 hours of 44.1 kHz stereo game soundtracks); other
Debian music is reserved for independent evaluation and must never be trained or tuned on. Files
are deduplicated by content (drascula's language folders hold identical copies), tracks shorter
than 30 s are left out (jingles and stingers), and each track's split is fixed by a hash of its
content, written as ``train/`` and ``valid/`` folders that the folder source honours."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from vae.cli import common

MIN_SECONDS = 30.0
VALID_FRACTION = 0.1
MANIFEST = "corpus.json"


@dataclass(frozen=True)
class PackageMusic:
    package: str
    pattern: str  # a glob under /, or ARCHIVE.pk3!MEMBER_PREFIX for music inside a zip

    def tracks(self) -> Iterator[tuple[str, bytes]]:
        """(name, encoded bytes) of every music file the package installs."""
        if "!" in self.pattern:
            archive, prefix = self.pattern.split("!", 1)
            with zipfile.ZipFile(archive) as pk3:  # Quake-style .pk3 = zip
                for member in sorted(pk3.namelist()):
                    if member.startswith(prefix) and member.endswith(".ogg"):
                        yield Path(member).name, pk3.read(member)
            return
        for path in sorted(Path("/").glob(self.pattern.lstrip("/"))):
            yield path.name, path.read_bytes()


SOURCES = (
    PackageMusic("drascula-music", "/usr/share/scummvm/drascula/**/*.ogg"),
    PackageMusic("planetblupi-music-ogg", "/usr/share/planetblupi/music/*.ogg"),
    PackageMusic("nexuiz-music", "/usr/share/games/nexuiz/data/music.pk3!sound/cdtracks/"),
    PackageMusic("supertux-data", "/usr/share/games/supertux2/music/**/*.ogg"),
    PackageMusic("hedgewars-data", "/usr/share/games/hedgewars/Data/Music/*.ogg"),
)


def missing_packages() -> list[str]:
    missing = []
    for source in SOURCES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", source.package],
                                capture_output=True, text=True, check=False)
        if "install ok installed" not in status.stdout:
            missing.append(source.package)
    return missing


def split_of(digest: str) -> str:
    return "valid" if int(digest[:8], 16) / 2**32 < VALID_FRACTION else "train"


def build_corpus(out: Path, sources: Sequence[PackageMusic] = SOURCES) -> dict[str, dict[str, float]]:
    """Writes OUT/{train,valid}/PACKAGE/NAME.ogg and OUT/corpus.json; returns hours per split
    and package."""
    seen: set[str] = set()
    tracks = []
    for source in sources:
        for name, data in source.tracks():
            digest = hashlib.sha1(data).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            target = out / split_of(digest) / source.package / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            seconds = sf.info(str(target)).duration
            if seconds < MIN_SECONDS:
                target.unlink()
                continue
            tracks.append({"path": target.relative_to(out).as_posix(), "package": source.package,
                           "seconds": round(seconds, 2), "sha1": digest})
    hours: dict[str, dict[str, float]] = {}
    for track in tracks:
        split = track["path"].split("/", 1)[0]
        by_package = hours.setdefault(split, {})
        by_package[track["package"]] = by_package.get(track["package"], 0.0) + track["seconds"] / 3600
    (out / MANIFEST).write_text(json.dumps({"min_seconds": MIN_SECONDS, "tracks": tracks,
                                            "hours": hours}, indent=1))
    return hours


def previous_output_problem(out: Path) -> str | None:
    """Why ``out`` may not be replaced: it holds something other than a corpus this command wrote."""
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        return f"-o {out}: not empty and not a corpus this command wrote; choose another -o"
    return None


def parser() -> argparse.ArgumentParser:
    p = common.build_parser("sweep-corpus", __doc__)
    common.add_out(p, "corpus folder to write (replaced if it holds a previous corpus)")
    p.add_argument("--install", action="store_true",
                   help="apt-get install the packages that are missing (needs root)")
    return p


@common.exits_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    problem = common.writable_problem("-o", out) or previous_output_problem(out)
    if problem:
        return common.fail(problem)
    missing = missing_packages()
    if missing and args.install:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True)
        missing = missing_packages()
    if missing:
        return common.fail(f"Debian packages not installed: {' '.join(missing)} "
                           f"(apt-get install {' '.join(missing)}, or pass --install)")
    if (out / MANIFEST).is_file():  # a previous corpus: replaced
        shutil.rmtree(out)
    hours = build_corpus(out)
    for split, by_package in hours.items():
        print(f"{split}: {sum(by_package.values()):.2f} h  " +
              ", ".join(f"{p} {h:.2f} h" for p, h in sorted(by_package.items())))
    print(f"corpus in {out}: use data.source=folder data.root={out}")
    return 0


if __name__ == "__main__":
    common.run(main)
