import os

import pytest

# Keep test runs quiet and local: no usage stats, no dashboard, Lightning tips off.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# The smallest VAE that still has every part: two blocks, hop 32, 0.1 s chunks.
MICRO = {
    "model.channels": 4,
    "model.channel_multipliers": [1, 2],
    "model.strides": [4, 8],
    "model.latent_dim": 4,
    "model.residual_dilations": [1, 3],
    "data.chunk_seconds": 0.1,
    "data.batch_size": 2,
    "data.val_chunks": 2,
    "loss.stft.fft_sizes": [256, 1024],
    "loss.mel.window_sizes": [64, 256, 1024],
    "loss.mel.n_mels": [10, 20, 40],
    "trainer.log_every_steps": 1,
    "trainer.progress_bar": False,
    "tracking.audio_examples": 1,
}


@pytest.fixture
def micro() -> dict:
    return dict(MICRO)
