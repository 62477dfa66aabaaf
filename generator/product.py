"""What one job produces: plain data handed from the generator to the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from generator.hotspots import HotspotParams
from generator.plan import Job
from generator.sources.base import SourceInfo

THRESHOLDS = (0.1, 0.2, 0.3, 0.5)
"""Change values above which a pixel counts as changed, for the changed-area figures."""

PERCENTILES = (50, 90, 95, 99)

CONTEXT_PREFIX = "s2_"
"""Sentinel-2 context assets are keyed ``s2_{year}`` (file ``s2_{year}.tif`` beside the change COG)."""


@dataclass(frozen=True)
class Histogram:
    """Equal-width buckets over [minimum, maximum] (the method's value range)."""

    minimum: float
    maximum: float
    buckets: list[int]


@dataclass(frozen=True)
class ChangedArea:
    threshold: float
    area_km2: float
    fraction: float  # of the valid area


@dataclass(frozen=True)
class Stats:
    """Full-resolution statistics of a change raster (valid pixels only)."""

    minimum: float
    maximum: float
    mean: float
    stddev: float
    count: int  # valid pixels
    valid_percent: float  # valid pixels / all pixels of the raster × 100
    histogram: Histogram
    percentiles: dict[str, float]  # {"p50": ..., "p90": ..., "p95": ..., "p99": ...}
    changed_area: list[ChangedArea]


@dataclass(frozen=True)
class HotspotSummary:
    """What the hotspots table holds, for the item's properties: its parameters, rows and total area."""

    params: HotspotParams
    count: int
    area_m2: float


@dataclass(frozen=True)
class Coverage:
    """How much of a region the source covers in both years of a pair, from its tiles' footprints: the
    fraction of the region's area (0..1) and the covered part (WGS84; the region itself when whole)."""

    fraction: float
    geometry: BaseGeometry


@dataclass(frozen=True)
class Product:
    """A finished, validated product on disk. The dataset's release it came from is ``source.version``."""

    job: Job
    source: SourceInfo
    cog_path: Path
    thumbnail_path: Path
    stats: Stats
    expression: str  # the method's formula as computed
    software_version: str
    created: datetime  # timezone-aware UTC
    fingerprint: str  # Job.fingerprint(...), recorded so re-runs can skip finished work
    context: dict[str, Path] = field(default_factory=dict)  # asset key → Sentinel-2 RGB COG of a year
    requests: int | None = None  # metered requests made for it (Earth Engine computePixels); None: unmetered
    hotspots_path: Path | None = None  # the GeoParquet hotspots table beside the COG
    hotspots: HotspotSummary | None = None  # set together with ``hotspots_path``
    coverage: Coverage | None = None  # None: not looked up (the item then covers the whole region)
    embedding: dict[str, Path] = field(default_factory=dict)  # asset key → embedding picture PNG of a year
