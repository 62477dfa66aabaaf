"""Jobs to run: region × year pair × method, each with its output grid. Built from a validated config."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from generator.errors import YearNotAvailableError
from generator.grid import Grid
from generator.hotspots import HotspotParams
from generator.tiling import Tiling, region_areas


@dataclass(frozen=True)
class Region:
    """A validated region: ``id`` is safe in paths and ids; ``geometry`` a valid WGS84 (Multi)Polygon."""

    id: str
    title: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class Job:
    """One product to make. ``grid`` is the output grid of the region (same for all its pairs and methods),
    or of one tile of it (``tile`` set, ``region.geometry`` then the part of the region in the tile)."""

    region: Region
    from_year: int
    to_year: int
    method: str
    grid: Grid = field(compare=False)
    hotspots: HotspotParams | None = field(default=None, compare=False)  # None: the method's defaults
    tile: str | None = None  # "32n_0006_0072" (see generator.tiling); None: the region's one grid

    @property
    def area_id(self) -> str:
        return area_id(self.region.id, self.tile)

    @property
    def described(self) -> str:
        return described(self.region.id, self.tile)

    @property
    def item_id(self) -> str:
        return f"{self.area_id}_{self.from_year}_{self.to_year}_{self.method}"

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
        if self.tile is not None:
            spec["tile"] = self.tile
        if self.hotspots is not None:
            spec["hotspots"] = [self.hotspots.threshold, self.hotspots.min_area_m2]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def area_id(region_id: str, tile: str | None) -> str:
    """The region id, with the tile id when a product is one tile of it (unique per output grid)."""
    return region_id if tile is None else f"{region_id}_{tile}"


def described(region_id: str, tile: str | None) -> str:
    """ "region 'x'" or "region 'x' tile 32n_0006_0072", for messages."""
    return f"region '{region_id}'" + ("" if tile is None else f" tile {tile}")


def check_years(wanted: set[int], available: list[int], source_name: str) -> None:
    """Raise ``YearNotAvailableError`` naming the missing years and listing those the source holds."""
    missing = sorted(wanted - set(available))
    if missing:
        raise YearNotAvailableError(
            f"{source_name} has no data for year(s) {', '.join(map(str, missing))}; "
            f"available years: {', '.join(map(str, available)) or 'none'}"
        )


def region_grids(
    region: Region, grid_origin: Callable[[str], tuple[float, float]], tiling: Tiling | None = None
) -> list[tuple[str | None, Region, Grid]]:
    """(tile id, region as that grid covers it, grid) of each output grid of a region: one (None, region,
    grid) when the region fits one grid, else one per tile (see ``generator.tiling``)."""
    out: list[tuple[str | None, Region, Grid]] = []
    for area in region_areas(region.geometry, grid_origin, tiling):
        part = region if area.tile is None else Region(region.id, region.title, area.geometry)
        out.append((area.tile, part, area.grid))
    return out


def make_jobs(
    regions: tuple[Region, ...],
    pairs: list[tuple[int, int]],
    methods: tuple[str, ...],
    grid_origin: Callable[[str], tuple[float, float]],
    tiling: Tiling | None = None,
) -> list[Job]:
    """Every region (or tile of a large region) × pair × method, each on its own grid (``grid_origin``
    from the source; ``tiling`` says which regions are tiles, default ``Tiling()``)."""
    jobs = []
    for region in regions:
        for tile, part, grid in region_grids(region, grid_origin, tiling):
            for a, b in pairs:
                jobs.extend(Job(part, a, b, method, grid, tile=tile) for method in methods)
    return jobs
