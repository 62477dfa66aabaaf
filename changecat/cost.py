"""What a job will read or request, and how much of its region the source covers: known before any pixel
is read, from the source's index, headers or image footprints. Shared by the run (warning, estimate, item
coverage) and ``changecat plan``; pure apart from the source's own look-ups."""

from __future__ import annotations

import shapely
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from changecat.embedding_context import picture_cost
from generator.grid import Grid, to_crs
from generator.plan import Job
from generator.product import Coverage
from generator.sources.base import Cost, Source

FULL_COVERAGE = 1.0 - 1e-6
"""A covered fraction at least this is a whole region: the rest (under one 10 m pixel per 100 km²) is the
rounding of footprints that meet edge to edge."""
AREA_SEGMENT_DEG = 0.001
"""Edges are cut into pieces this long (about 100 m) before projecting to measure areas in metres."""


def windows_inside(windows: list[Window], region: BaseGeometry, grid: Grid) -> list[Window]:
    """The windows that touch the region (in the grid's CRS); the others would be all nodata."""
    return [w for w in windows if region.intersects(box(*grid.window_bounds(w)))]


def job_windows(job: Job, source: Source) -> list[Window]:
    """The windows ``make_product`` computes for a job: the source's windows that touch the region."""
    region = to_crs(job.region.geometry, "EPSG:4326", job.grid.crs)
    return windows_inside(source.windows(job.grid), region, job.grid)


def job_cost(job: Job, source: Source) -> Cost:
    """What computing a job's change reads (file blocks and bytes) or requests (metered requests, pixels)."""
    return source.cost(job.grid, job.from_year, job.to_year, job_windows(job, source))


def context_cost(job: Job, source: Source) -> Cost:
    """One year's Sentinel-2 context composite of a job's region (requests and pixels)."""
    region = to_crs(job.region.geometry, "EPSG:4326", job.grid.crs)
    tiles = windows_inside(source.context_windows(job.grid), region, job.grid)
    return Cost(requests=len(tiles), pixels=sum(int(w.width) * int(w.height) for w in tiles))


def estimate_requests(jobs: list[Job], source: Source, with_context: bool) -> tuple[int, int]:
    """(requests, pixels) the jobs will ask a metered source for: their tiles inside each region, each
    region's embedding pictures once per year, and its Sentinel-2 composites once per year when
    ``with_context``. An upper bound for products that
    are up to date (skipped), a lower one when tiles are split or retried."""
    total = Cost()
    composites: set[tuple[str, int]] = set()
    pictures: set[tuple[str, Grid, int]] = set()
    for job in jobs:
        total += job_cost(job, source) + picture_cost(job, source, pictures)
        for year in (job.from_year, job.to_year) if with_context else ():
            if (job.area_id, year) not in composites:  # one composite per grid (tile)
                composites.add((job.area_id, year))
                total += context_cost(job, source)
    return total.requests, total.pixels


def polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The areal part of an intersection (lines and points where footprints only touch dropped)."""
    polygons = [g for g in shapely.get_parts(geometry) if isinstance(g, Polygon) and not g.is_empty]
    if not polygons:
        return Polygon()
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def area_m2(geometry_wgs84: BaseGeometry, crs: str) -> float:
    """Area of a WGS84 geometry measured in a projected CRS (the job's UTM grid)."""
    if geometry_wgs84.is_empty:
        return 0.0
    return float(to_crs(geometry_wgs84.segmentize(AREA_SEGMENT_DEG), "EPSG:4326", crs).area)


CoverageCache = dict[tuple[str, Grid, int], BaseGeometry]
"""Each year's coverage of a region by (region id, grid, year), for the other jobs of a run or plan."""


def year_coverage(source: Source, job: Job, year: int, cache: CoverageCache | None = None) -> BaseGeometry:
    """The part of a job's region (WGS84) the source's tiles of ``year`` cover (looked up once per cache)."""
    key = (job.region.id, job.grid, year)
    if cache is not None and key in cache:
        return cache[key]
    part = polygonal(source.coverage(job.region.geometry, year))
    if cache is not None:
        cache[key] = part
    return part


def fraction_of(part: BaseGeometry, job: Job) -> float:
    """Area of a part of a job's region as a fraction of the region's (measured in the job's grid CRS)."""
    whole = area_m2(job.region.geometry, job.grid.crs)
    return min(1.0, area_m2(part, job.grid.crs) / whole) if whole > 0 else 0.0


def pair_coverage(source: Source, job: Job, cache: CoverageCache | None = None) -> Coverage:
    """The part of a job's region the source covers in both of its years, and its fraction of the region's
    area. A fully covered region keeps its own geometry."""
    covered = job.region.geometry
    for year in (job.from_year, job.to_year):
        covered = covered.intersection(year_coverage(source, job, year, cache))
    covered = polygonal(covered)
    fraction = fraction_of(covered, job)
    if fraction >= FULL_COVERAGE:
        return Coverage(1.0, job.region.geometry)
    return Coverage(fraction, covered)


def coverage_warning(region_id: str, coverage: Coverage, years: tuple[int, ...], where: str) -> str:
    """The warning for a partly covered region: how much, in which years, and what it means."""
    return (
        f"region '{region_id}' is only {coverage.fraction:.1%} covered by {where} in "
        f"{' and '.join(map(str, years))}: the rest of it is nodata, and the item's geometry is the "
        "covered part"
    )
