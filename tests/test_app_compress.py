"""The listening room's Compress tab (sweeps/app/tab_compress.py) under Streamlit's AppTest with a
tiny bundle: a real .vaec file at its measured rate, decoded as vae-decompress decodes it, beside
the original and beside ffmpeg's libopus at the same rate; a rate the codec cannot reach is an
error on the page, not an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_app import bundle_dir, page  # noqa: F401  (fixtures)
from sweeps.app import clips
from sweeps.app.session import Selection
from sweeps.app.tab_compress import SCALE, TARGET, compress_clip
from vae.codec import decompress_latents, read_compressed
from vae.codec.files import coded_kbps
from vae.inference import load_bundle

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TAB = "Compress"


def compress_tab(at: AppTest):
    return next(tab for tab in at.tabs if tab.label == TAB)


def figures(at: AppTest) -> dict[str, dict[str, str]]:
    """The tab's table: {codec: {figure: shown value}}."""
    return compress_tab(at).table[0].value.to_dict(orient="index")


def clip_seconds(at: AppTest, bundle_dir: Path) -> float:
    rate = load_bundle(bundle_dir).config.model.sample_rate
    return round(at.slider(key="example_seconds").value * rate) / rate


def example_selection(bundle_dir: Path, seconds: float) -> Selection:
    """The page's selection of the example clip, built as the page builds it."""
    bundle = load_bundle(bundle_dir)
    clip = clips.Clip(clips.EXAMPLE)
    audio = clips.load_clip(clip, bundle, seconds)
    return Selection(str(bundle_dir), bundle, clip, seconds, audio, clips.run_model(bundle, audio))


def test_compress_tab_shows_a_vaec_file_at_its_measured_rate_beside_opus(page, bundle_dir):
    at = page.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    shown = figures(at)
    vaec, opus = shown[".vaec"], shown["Opus"]
    seconds = clip_seconds(at, bundle_dir)
    # the rate shown is the file's: its bytes x 8 / the clip's duration, header included
    assert vaec["coded kbit/s"] == f"{coded_kbps(int(vaec['bytes']), seconds):.4g}"
    assert float(vaec["ideal kbit/s"]) <= float(vaec["coded kbit/s"])
    reconstruct = {m.label: m.value for m in at.metric}  # the Reconstruct tab's, same posterior
    assert vaec["KL kbit/s"] == reconstruct["kl_kbps"]
    assert all(vaec[name] != "–" for name in ("mel_distance", "stft_distance", "si_sdr"))
    # Opus asked for the .vaec's rate; what its Ogg file weighs is shown beside it (a 3 s clip
    # pays the container's headers, so it lands above, never far off)
    assert opus["coded kbit/s"] == f"{coded_kbps(int(opus['bytes']), seconds):.4g}"
    assert 0.5 <= float(opus["coded kbit/s"]) / float(vaec["coded kbit/s"]) <= 3.0
    assert opus["si_sdr"] != "–"
    tab = compress_tab(at)
    assert len(tab.get("audio")) == 3  # original, decompressed .vaec, Opus
    assert [b.proto.label for b in tab.get("download_button")] == ["Download the .vaec file"]
    # the bytes shown are the file's: the same clip compressed here weighs the same
    assert int(vaec["bytes"]) == len(compress_clip(example_selection(bundle_dir, seconds),
                                                   SCALE, 1.0, 0).data)
    assert "dither seed 0" in " ".join(c.value for c in tab.caption)  # vae-evaluate --codec's


def test_target_rate_is_met_and_an_unreachable_one_is_an_error_not_an_exception(page, bundle_dir):
    at = page.run()
    at.radio(key="compress_mode").set_value(TARGET).run()
    at.number_input(key="compress_kbps").set_value(6.0).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    vaec = figures(at)[".vaec"]
    assert float(vaec["coded kbit/s"]) <= 6.0
    assert coded_kbps(int(vaec["bytes"]), clip_seconds(at, bundle_dir)) <= 6.0
    # the finest quantiser that fits: close under the target, not far below it
    assert int(vaec["bytes"]) > 0.8 * 6.0 * 1000 / 8 * clip_seconds(at, bundle_dir)
    at.number_input(key="compress_kbps").set_value(0.1).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1
    message = at.error[0].value  # names the file as downloaded, not its temporary folder
    assert "example.vaec: a target of 0.1 kbit/s is below" in message
    assert "vae-app-codec-" not in message
    assert not compress_tab(at).table and not compress_tab(at).get("download_button")
    assert compress_tab(at).number_input(key="compress_kbps").min == pytest.approx(0.1)


def test_without_ffmpeg_the_vaec_part_is_still_shown(page, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))  # restored after the test
    at = page.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    tab = compress_tab(at)
    assert any(i.value.startswith("No Opus to compare with: ffmpeg is not on PATH")
               for i in tab.info), [i.value for i in tab.info]
    assert list(figures(at)) == [".vaec"] and len(tab.get("audio")) == 2
    assert len(tab.get("download_button")) == 1


def test_the_coded_bytes_are_a_vaec_file_decoding_to_the_audio_played(bundle_dir, tmp_path):
    sel = example_selection(bundle_dir, 1.0)
    bundle, audio = sel.bundle, sel.audio
    compressed = compress_clip(sel, SCALE, 2.0, 0)
    path = tmp_path / "clip.vaec"
    path.write_bytes(compressed.data)
    header, blocks = read_compressed(path)
    assert len(list(blocks)) == header.blocks  # every block's checksum holds
    assert header.length == audio.shape[-1] and header.dither_seed == 0
    assert compressed.coded.bytes == len(compressed.data) == compressed.written["bytes"]
    # decoded as vae-decompress decodes (the mean of the file's latents, the clip's length)
    latents = decompress_latents(path, bundle)
    torch.testing.assert_close(compressed.coded.audio,
                               clips.decode(bundle, latents.mean, latents.length))
    undithered = compress_clip(sel, SCALE, 2.0, None)
    assert undithered.data != compressed.data
