"""A real codec on the VAE: ``.vaec`` files of quantised, entropy-coded latents at a measured
bitrate (``vae-compress`` / ``vae-decompress``). quantiser.py: the posterior-matched, optionally
dithered quantiser; entropy.py: constriction's range coder under quantised Gaussians; container.py:
the file layout and its checks; files.py: audio file <-> .vaec."""

from vae.codec.container import CodecError, Header
from vae.codec.entropy import ENTROPY_MODELS
from vae.codec.files import (DEFAULT_BLOCK_SECONDS, compress_at_kbps, compress_file,
                             compress_latents, decompress_file, decompress_latents,
                             read_compressed)

__all__ = ["DEFAULT_BLOCK_SECONDS", "ENTROPY_MODELS", "CodecError", "Header", "compress_at_kbps",
           "compress_file", "compress_latents", "decompress_file", "decompress_latents",
           "read_compressed"]
