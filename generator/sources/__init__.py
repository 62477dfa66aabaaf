"""Embedding sources behind one interface (``base.Source``); ``open_source`` picks one from the config."""

from __future__ import annotations

from generator.config import AefSourceConfig, SourceConfig
from generator.sources.base import Source


def open_source(cfg: SourceConfig) -> Source:
    """Open the source a config names (imports are lazy so each source's dependencies stay optional)."""
    if isinstance(cfg, AefSourceConfig):
        from generator.sources.aef import AefSource

        return AefSource(cfg.root)
    from generator.sources.earthengine import EarthEngineSource

    return EarthEngineSource(
        project=cfg.project, collection=cfg.collection, url=cfg.url, max_concurrency=cfg.max_concurrency
    )
