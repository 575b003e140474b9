"""The music corpus builder on packages laid out at test time: a plain folder, duplicates in
language folders, a zip (.pk3) archive, and a jingle too short to keep."""

import json
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from sweeps.tools.corpus import MANIFEST, PackageMusic, build_corpus, split_of

SR = 8000


def write_ogg(path: Path, seconds: float, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = 0.1 * np.random.default_rng(seed).standard_normal((int(seconds * SR), 2))
    sf.write(path, audio.astype(np.float32), SR, format="OGG")
    return path.read_bytes()


def test_corpus_deduplicates_reads_archives_drops_jingles_and_fixes_the_split(tmp_path):
    game = tmp_path / "usr" / "game"
    song = write_ogg(game / "en" / "song.ogg", 31, 1)
    (game / "de").mkdir()
    (game / "de" / "song.ogg").write_bytes(song)  # the same track in another language folder
    write_ogg(game / "en" / "jingle.ogg", 3, 2)
    for k in range(6):
        write_ogg(game / "en" / f"track{k}.ogg", 32, 10 + k)
    archive = tmp_path / "music.pk3"
    with zipfile.ZipFile(archive, "w") as pk3:
        pk3.writestr("sound/cdtracks/zipped.ogg", write_ogg(tmp_path / "z.ogg", 33, 3))
        pk3.writestr("maps/readme.txt", "not music")
    sources = (PackageMusic("game", f"{game}/**/*.ogg"),
               PackageMusic("archive", f"{archive}!sound/cdtracks/"))
    out = tmp_path / "corpus"
    hours = build_corpus(out, sources)
    manifest = json.loads((out / MANIFEST).read_text())
    names = sorted(Path(t["path"]).name for t in manifest["tracks"])
    assert names == sorted(["song.ogg", "zipped.ogg", *(f"track{k}.ogg" for k in range(6))])
    assert sum(sum(p.values()) for p in hours.values()) * 3600 > 8 * 31
    # the split is on disk, fixed by each track's content
    assert all(t["path"].split("/", 1)[0] == split_of(t["sha1"]) for t in manifest["tracks"])
    # building again gives the same split
    build_corpus(out.with_name("again"), sources)
    again = json.loads((out.with_name("again") / MANIFEST).read_text())
    assert [t["path"] for t in again["tracks"]] == [t["path"] for t in manifest["tracks"]]
