"""The ``data`` section, torch-free: the settings every source reads, each source's own section,
and the stem names.

``vae/config.py`` extends :class:`DataSettings` into ``DataConfig``: it narrows ``source`` to the
names in ``vae/data/registry.py`` and mounts each source's section (defined here, paired with its
class in the registry) at ``data.<name>``. The sources are handed a ``DataSettings``, so they
never import the config (no import cycle).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vae.config_base import Section

# THE stem names (MUSDB18's files): every source delivers chunks of one of these.
STEM_NAMES = ("mixture", "drums", "bass", "other", "vocals")
StemName = Literal[STEM_NAMES]  # type: ignore[valid-type]  # a Literal built from the one tuple


class DataSettings(Section):
    source: str = Field("synthetic", description="where chunks come from (vae/data/registry.py)")
    root: str | None = Field(None, description="the data folder: MUSDB18 root (falls back to "
                             "$MUSDB_PATH) or, for source folder, any folder of audio files")
    format: Literal["wav", "stem"] = Field(
        "wav", description="wav = MUSDB18-HQ layout; stem = .stem.mp4, converted once to a wav cache"
    )
    cache_dir: str | None = Field(None, description="wav cache for the stem format")
    sources: list[StemName] = Field(default_factory=lambda: ["mixture"], min_length=1)
    chunk_seconds: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    train_chunks_per_epoch: int = Field(2000, ge=1)
    val_chunks: int = Field(16, ge=1, description="fixed, seeded validation chunks")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> DataSettings:
        if self.cache_dir is not None and self.format != "stem":
            raise ValueError("cache_dir is only used with format: stem (the .stem.mp4 wav cache)")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources lists a name twice: {self.sources}")
        return self


class SyntheticDataConfig(Section):
    """``data.synthetic``: the synthetic music of synthetic_source.py."""

    seed: int = Field(0, description="the synthetic tracks are a function of this seed")


class FolderDataConfig(Section):
    """``data.folder``: any folder of audio files (folder_source.py)."""

    valid_fraction: float = Field(0.1, gt=0, lt=1, description="share of files held out for "
                                  "validation when the folder has no train/ and valid/ subfolders")
    loudness_cutoff_lufs: float | None = Field(
        -40.0, description="chunks quieter than this are drawn again (near-silence teaches "
        "nothing); null keeps every chunk")
    max_draws: int = Field(8, ge=1, description="draws per chunk before a quiet one is kept")
    listing_cache_dir: str | None = Field(
        None, description="where the file listing is cached (default ~/.cache/audio-vae/listings)")
