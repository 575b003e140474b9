"""THE list of data sources: ``data.source`` names, config sections and classes.

Each name maps to a :class:`~vae.config_base.LazyClass`: its section, if it has one (mounted by
``vae/config.py`` at ``data.<name>``), and the path of its :class:`~vae.data.source.DataSource`
subclass, imported on first build. The sections sit in settings.py beside ``DataSettings``, one
torch-free module for the whole ``data.*`` schema, so it is read without importing torch, numpy
or the audio readers. Adding a source = its class file, its section in settings.py (if any) and
one entry here; nothing else lists the names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vae.config_base import LazyClass
from vae.data.settings import DataSettings, FolderDataConfig, SyntheticDataConfig

if TYPE_CHECKING:
    from vae.data.source import ChunkFormat, DataSource

DATA_SOURCES: dict[str, LazyClass] = {
    "synthetic": LazyClass("vae.data.synthetic_source:SyntheticSource", SyntheticDataConfig),
    "musdb": LazyClass("vae.data.musdb_source:MusdbSource"),
    "folder": LazyClass("vae.data.folder_source:FolderSource", FolderDataConfig),
}


def build_source(data: DataSettings, chunk: ChunkFormat) -> DataSource:
    """The source named by ``data.source``, with its section ``data.<name>`` when it has one."""
    if data.source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {data.source!r}; known: {', '.join(DATA_SOURCES)}")
    entry = DATA_SOURCES[data.source]
    section = getattr(data, data.source) if entry.config_section is not None else None
    return entry(data, section, chunk)
