"""The .vaec codec (issue 20): compress -> decompress reproduces the quantiser's symbols exactly
and the audio of decoding them; the coded size is the symbols' information content plus framing;
any block decodes alone; dither is reproducible from its seed; and a damaged or foreign file is
one clear line and exit 2."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.test_inference import make_bundle, tone
from vae.codec import compress_latents, decompress_file, read_compressed
from vae.codec.container import BLOCK_HEAD, PREAMBLE
from vae.codec.entropy import information_bits
from vae.codec.quantiser import Quantiser
from vae.inference import Latents, decode_to_file, encode_file, load_bundle

SECONDS = 6.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    bundle = load_bundle(make_bundle(root / "model"))
    rate, channels = bundle.config.model.sample_rate, bundle.config.model.audio_channels
    rng = np.random.default_rng(0)  # music-like: a tone whose level moves, plus noise
    audio = tone(SECONDS, rate, channels) * (1 + 0.8 * np.sin(np.arange(round(SECONDS * rate))
                                                               / rate * 3))[:, None]
    audio = (audio + 0.05 * rng.standard_normal(audio.shape)).astype(np.float32)
    sf.write(root / "clip.wav", audio, rate)
    latents = encode_file(bundle, root / "clip.wav")
    return {"root": root, "bundle": bundle, "latents": latents}


def compress(setup, name, **options):
    options.setdefault("block_seconds", 1.0)
    return compress_latents(setup["latents"], setup["bundle"], setup["root"] / name, **options)


@pytest.mark.parametrize("entropy_model", ["prior", "gaussian"])
@pytest.mark.parametrize("dither_seed", [None, 11])
def test_decompress_gives_the_quantisers_symbols_and_the_audio_they_decode_to(
        setup, entropy_model, dither_seed, tmp_path):
    latents = setup["latents"]
    result = compress(setup, f"{entropy_model}_{dither_seed}.vaec", entropy_model=entropy_model,
                      dither_seed=dither_seed)
    quantiser = Quantiser.matched(latents.std.numpy(), 1.0, dither_seed)
    header, blocks = read_compressed(result["file"])
    expected, decoded = [], []
    for block, symbols in blocks:
        part = latents.mean.numpy()[:, block.start:block.start + header.block_frames]
        assert np.array_equal(symbols, quantiser.quantise(part, block.index))  # bit-exact
        expected.append(quantiser.dequantise(quantiser.quantise(part, block.index), block.index))
        decoded.append(block.index)
    assert decoded == list(range(header.blocks)) and header.blocks == result["blocks"] > 3
    # the audio: the file's latents decoded, against the quantiser's latents decoded directly
    direct = Latents(torch.from_numpy(np.concatenate(expected, 1)), latents.std, latents.metadata)
    decode_to_file(setup["bundle"], direct, tmp_path / "direct.wav")
    decompress_file(result["file"], setup["bundle"], tmp_path / "file.wav")
    a, b = sf.read(tmp_path / "direct.wav")[0], sf.read(tmp_path / "file.wav")[0]
    assert a.shape == b.shape == (round(SECONDS * setup["bundle"].config.model.sample_rate),
                                  setup["bundle"].config.model.audio_channels)
    assert np.array_equal(a, b)


def test_the_coded_size_is_the_information_content_plus_framing(setup):
    """The range coder spends within 1% of the ideal bits under the block's fitted Gaussians;
    the rest is the header and each block's framing (20 bytes) and model (16 bytes a channel)."""
    result = compress(setup, "size.vaec", entropy_model="gaussian", dither_seed=5)
    header, blocks = read_compressed(result["file"])
    quantiser = header.quantiser()
    ideal_bits = sum(information_bits(symbols, block.model, quantiser.offsets(block.index,
                                                                              symbols.shape))
                     for block, symbols in blocks)
    framing = header.blocks * (BLOCK_HEAD.size + 16 * header.latent_dim)
    payload_bytes = result["bytes"] - result["header_bytes"] - framing
    assert ideal_bits > 1000  # symbols that carry information, not a constant
    assert ideal_bits / 8 <= payload_bytes <= 1.01 * ideal_bits / 8 + 4 * header.blocks
    assert result["coded_kbps"] == pytest.approx(result["bytes"] * 8 / SECONDS / 1000)


def test_any_block_decodes_alone_from_its_boundary(setup):
    result = compress(setup, "blocks.vaec", dither_seed=3)
    _, blocks = read_compressed(result["file"])
    everything = [(block.index, block.offset, symbols) for block, symbols in blocks]
    for index, offset, symbols in everything[1:]:
        _, from_there = read_compressed(result["file"], from_block=(index, offset))
        first_block, first_symbols = next(from_there)
        assert first_block.index == index and np.array_equal(first_symbols, symbols)


def test_dither_is_reproducible_from_its_seed(setup):
    one = Path(compress(setup, "seed7a.vaec", dither_seed=7)["file"]).read_bytes()
    again = Path(compress(setup, "seed7b.vaec", dither_seed=7)["file"]).read_bytes()
    other = Path(compress(setup, "seed8.vaec", dither_seed=8)["file"]).read_bytes()
    assert one == again and one != other


# ---- bad files: one line naming the file (and block), exit 2 --------------------------------------

def rewrite_header(data: bytes, **changes) -> bytes:
    _, _, size = PREAMBLE.unpack(data[:PREAMBLE.size])
    header = json.loads(data[PREAMBLE.size:PREAMBLE.size + size])
    text = json.dumps({**header, **changes}).encode()
    rest = data[PREAMBLE.size + size + 4:]
    return data[:6] + struct.pack("<I", len(text)) + text + struct.pack("<I", zlib.crc32(text)) + rest


def damaged(data: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(data)
    flipped[-40] ^= 0x10
    return {
        "truncated": (data[:-30], "more than the file holds (truncated)"),
        "flipped": (bytes(flipped), "checksum mismatch: the block is damaged"),
        "magic": (b"RIFF" + data[4:], "not a .vaec file (starts with b'RIFF'"),
        "version": (data[:4] + b"\x09\x00" + data[6:], ".vaec version 9; this reader reads version 1"),
        "channels": (rewrite_header(data, audio_channels=10**9),
                     "header audio_channels: Input should be less than or equal to 64"),
        "hours": (rewrite_header(data, frames=10**12, length=10**12),
                  "header frames: Input should be less than or equal to"),
        "empty": (b"", "too short for a .vaec file (0 bytes)"),
    }


@pytest.mark.parametrize("fault", ["truncated", "flipped", "magic", "version", "channels", "hours",
                                   "empty", "other weights"])
def test_vae_decompress_refuses_a_bad_file_in_one_line(setup, fault, tmp_path):
    source = Path(compress(setup, "good.vaec", dither_seed=1)["file"])
    model = setup["bundle"].path
    if fault == "other weights":
        bad, message = source, "coded by other weights"
        model = make_bundle(tmp_path / "other", seed=1)
    else:
        content, message = damaged(source.read_bytes())[fault]
        bad = tmp_path / "bad.vaec"
        bad.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "vae.cli.decompress", str(bad), "--model",
                           str(model), "-o", str(tmp_path / "out.wav")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: {bad}: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out.wav").exists()
    if fault in ("truncated", "flipped"):  # the damaged block is named by index, byte and time
        assert ": block " in done.stderr and "(byte " in done.stderr and " s)" in done.stderr


def test_kbps_picks_the_finest_step_within_the_target_and_refuses_one_below_reach(setup):
    from vae.codec import CodecError, compress_at_kbps

    # between a fine and a coarse quantiser's rates (the coarse one near the framing's floor)
    target = (compress(setup, "fine.vaec", scale=0.05)["coded_kbps"]
              + compress(setup, "coarse.vaec", scale=1.0)["coded_kbps"]) / 2
    out = setup["root"] / "target.vaec"
    result = compress_at_kbps(setup["latents"], setup["bundle"], out, target, block_seconds=1.0)
    assert result["coded_kbps"] <= target and out.stat().st_size == result["bytes"]
    finer = compress(setup, "finer.vaec", scale=0.9 * result["scale"])
    assert finer["coded_kbps"] > target
    with pytest.raises(CodecError, match="is below what the coarsest quantiser"):
        compress_at_kbps(setup["latents"], setup["bundle"], setup["root"] / "tiny.vaec", 0.001)
    assert not (setup["root"] / "tiny.vaec").exists()
