"""THE list of data sources: ``data.source`` names and their classes.

Adding a source = one file (a :class:`~vae.data.source.DataSource` subclass, with its settings
section in ``config_section`` if it has one) plus one entry here. ``vae/config.py`` derives the
accepted names of ``data.source`` and mounts each section at ``data.<name>`` from this dict.
"""

from __future__ import annotations

from vae.data.folder_source import FolderSource
from vae.data.musdb_source import MusdbSource
from vae.data.settings import DataSettings
from vae.data.source import ChunkFormat, DataSource
from vae.data.synthetic_source import SyntheticSource

DATA_SOURCES: dict[str, type[DataSource]] = {
    "synthetic": SyntheticSource,
    "musdb": MusdbSource,
    "folder": FolderSource,
}


def build_source(data: DataSettings, chunk: ChunkFormat) -> DataSource:
    """The source named by ``data.source``, with its section ``data.<name>`` when it has one."""
    if data.source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {data.source!r}; known: {', '.join(DATA_SOURCES)}")
    cls = DATA_SOURCES[data.source]
    section = getattr(data, data.source) if cls.config_section is not None else None
    return cls(data, section, chunk)
