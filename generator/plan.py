"""Jobs to run: region × year pair × method, each with its output grid. Built from a validated config."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from generator.errors import YearNotAvailableError
from generator.grid import Grid, grid_for
from generator.hotspots import HotspotParams


@dataclass(frozen=True)
class Region:
    """A validated region: ``id`` is safe in paths and ids; ``geometry`` a valid WGS84 (Multi)Polygon."""

    id: str
    title: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class Job:
    """One product to make. ``grid`` is the output grid of the region (same for all its pairs and methods)."""

    region: Region
    from_year: int
    to_year: int
    method: str
    grid: Grid = field(compare=False)
    hotspots: HotspotParams | None = field(default=None, compare=False)  # None: the method's defaults

    @property
    def item_id(self) -> str:
        return f"{self.region.id}_{self.from_year}_{self.to_year}_{self.method}"

    def fingerprint(self, source_identity: str, software_version: str) -> str:
        """A hash of everything that determines the product, to skip finished work on a re-run."""
        spec = {
            "region": mapping(self.region.geometry),
            "title": self.region.title,
            "years": [self.from_year, self.to_year],
            "method": self.method,
            "grid": [self.grid.crs, list(self.grid.transform)[:6], self.grid.width, self.grid.height],
            "source": source_identity,
            "software": software_version,
        }
        if self.hotspots is not None:
            spec["hotspots"] = [self.hotspots.threshold, self.hotspots.min_area_m2]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def check_years(wanted: set[int], available: list[int], source_name: str) -> None:
    """Raise ``YearNotAvailableError`` naming the missing years and listing those the source holds."""
    missing = sorted(wanted - set(available))
    if missing:
        raise YearNotAvailableError(
            f"{source_name} has no data for year(s) {', '.join(map(str, missing))}; "
            f"available years: {', '.join(map(str, available)) or 'none'}"
        )


def make_jobs(
    regions: tuple[Region, ...],
    pairs: list[tuple[int, int]],
    methods: tuple[str, ...],
    grid_origin: Callable[[str], tuple[float, float]],
) -> list[Job]:
    """Every region × pair × method, each region on its own grid (``grid_origin`` from the source)."""
    jobs = []
    for region in regions:
        crs = grid_for(region.geometry).crs
        grid = grid_for(region.geometry, origin=grid_origin(crs))
        for a, b in pairs:
            jobs.extend(Job(region, a, b, method, grid) for method in methods)
    return jobs
