"""Large regions as tiles: the region is split by UTM zone (and hemisphere), and each zone part is covered by
the tiles of a fixed lattice of that zone that it touches. Pure functions (geometries in, grids out).

The lattice of a zone is aligned with the source's 10 m pixel lattice (``Source.grid_origin``) and anchored
next to the zone's false origin, so tile ids ("32n_0006_0072": zone, hemisphere, column, row of
``tile_size`` × ``tile_size`` pixels, counted east and north from there) do not depend on the source.
A tile's grid is the part of the lattice tile that the region's bounds cover (never beyond the tile).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import shapely
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from generator.grid import (
    RESOLUTION_M,
    UTM_ZONE_WIDTH_DEG,
    Grid,
    grid_for,
    to_crs,
    utm_zone,
    zone_span_problem,
)

DEFAULT_TILE_SIZE = 8192
"""Side of a tile in pixels: 8192 px (81.92 km at 10 m) like the files of the AEF COG copies, so one tile
is 67 Mpx, a float32 change COG of about 270 MB before compression."""
DEFAULT_TILE_ABOVE_PIXELS = 4 * DEFAULT_TILE_SIZE**2
"""Regions whose single grid would have more pixels than this (about 268 Mpx, a square of 164 km) are cut
into tiles: beyond it one item would exceed about 1 GB of float32 values, its COG needs that much scratch
space and minutes of one process, and it would be a single lump of work for a cluster."""
MIN_TILE_SIZE = 16
"""Smallest tile side the config accepts (tests use small tiles; real runs want thousands of pixels)."""
MAX_TILE_SIZE = 32768
"""Largest tile side: 1 Gpx per tile, and Earth Engine's computePixels limit of 32768 px a side."""
MAX_TILES_PER_REGION = 100_000
"""Tiles one region may be cut into: each is an item, a job and a folder; 100,000 tiles of 8192 px would
be 6.7 × 10¹² pixels, far above any sane ``max_pixels``, so this only stops tiny tile sizes on big regions."""
SLIVER_CHECK_MAX_PIXELS = 16 * 2**20
"""Thin pieces of a tile are rasterized to see whether they hold a pixel centre when their grid has at most
16 Mpx (16 MB of mask); a longer sliver is kept, and its product fails alone with "no valid pixel"."""
UTM_SOUTH_LIMIT_DEG = -80.0
UTM_NORTH_LIMIT_DEG = 84.0
"""UTM is defined from 80°S to 84°N; the polar caps use UPS, which changecat does not tile."""
ZONE_DENSIFY_DEG = 0.01
"""Zone parts are densified at 0.01° (about 1 km) before they are projected, so the projected part follows
its curved edges (as ``grid_for`` does for bounds): the chord of a 0.01° edge strays a few cm at most."""
TILE_EDGE_DENSIFY_M = 1000.0
"""Tile edges are densified at 1 km before a tile's piece of the region goes back to WGS84, so the item
footprint follows the tile edge (a straight line in UTM is a curve in WGS84)."""


@dataclass(frozen=True)
class Tiling:
    """When and how regions are tiled (the config's ``tiling``)."""

    tile_size: int = DEFAULT_TILE_SIZE
    above_pixels: int = DEFAULT_TILE_ABOVE_PIXELS


@dataclass(frozen=True)
class Area:
    """One output grid of a region: the whole region (``tile`` None) or one tile of it, with the part of
    the region it covers (WGS84)."""

    tile: str | None
    geometry: BaseGeometry
    grid: Grid


@dataclass(frozen=True)
class ZonePart:
    zone: int
    north: bool
    geometry: BaseGeometry  # WGS84, inside the zone's strip and hemisphere

    @property
    def crs(self) -> str:
        return f"EPSG:{(32600 if self.north else 32700) + self.zone}"

    @property
    def label(self) -> str:
        return f"{self.zone:02d}{'n' if self.north else 's'}"


def needs_tiles(geom_wgs84: BaseGeometry, tiling: Tiling) -> bool:
    """Whether the region is too wide for one UTM grid or its grid has more than ``above_pixels``."""
    if zone_span_problem(geom_wgs84) is not None:
        return True
    grid = grid_for(geom_wgs84)
    return grid.width * grid.height > tiling.above_pixels


def utm_range_problem(geom_wgs84: BaseGeometry) -> str | None:
    """Why a region to be tiled cannot be (it reaches past UTM's latitudes), or None."""
    _, south, _, north = geom_wgs84.bounds
    if south >= UTM_SOUTH_LIMIT_DEG and north <= UTM_NORTH_LIMIT_DEG:
        return None
    return (
        f"is cut into tiles on UTM zones (too large for one grid) but reaches {_lat(south)}–{_lat(north)}; "
        f"UTM covers {_lat(UTM_SOUTH_LIMIT_DEG)}–{_lat(UTM_NORTH_LIMIT_DEG)} (the polar caps use UPS, which "
        "changecat does not tile): clip the region to that range, or make it small enough for one grid"
    )


def _lat(value: float) -> str:
    return f"{abs(value):g}°{'N' if value >= 0 else 'S'}"


def zone_parts(geom_wgs84: BaseGeometry) -> list[ZonePart]:
    """The region cut at the UTM zone borders and the equator, west to east, south to north.

    Regions never cross the antimeridian (the config refuses them), so zones run from the region's west
    edge to its east edge; a region ending at 180° ends in zone 60.
    """
    west, south, east, north = geom_wgs84.bounds
    parts = []
    for zone in range(utm_zone(west), utm_zone(math.nextafter(east, -math.inf)) + 1):
        z0 = -180.0 + UTM_ZONE_WIDTH_DEG * (zone - 1)
        for is_north, (s, n) in ((False, (south, min(north, 0.0))), (True, (max(south, 0.0), north))):
            if s >= n:
                continue
            piece = _polygons(geom_wgs84.intersection(box(z0, s, z0 + UTM_ZONE_WIDTH_DEG, n)))
            if piece is not None:
                parts.append(ZonePart(zone, is_north, piece))
    return parts


def _polygons(geom: BaseGeometry) -> BaseGeometry | None:
    """The areal part of an intersection (lines and points where shapes only touch are dropped)."""
    polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else shapely.union_all(polys)


def lattice_phase(origin: tuple[float, float], resolution: float = RESOLUTION_M) -> tuple[float, float]:
    """The corner of tile (0, 0): the point of the source's pixel lattice nearest the zone's false origin
    above it, so every tile of the zone's UTM range has a column and row ≥ 0."""
    return (origin[0] % resolution, origin[1] % resolution)


def tile_id(part: ZonePart, col: int, row: int) -> str:
    """ "32n_0006_0072": path-safe and readable, sorting by zone, then column, then row."""
    return f"{part.label}_{col:04d}_{row:04d}"


def _projected_bounds(part: ZonePart) -> tuple[float, float, float, float]:
    return to_crs(part.geometry.segmentize(ZONE_DENSIFY_DEG), "EPSG:4326", part.crs).bounds


def part_pixels(parts: list[ZonePart], resolution: float = RESOLUTION_M) -> int:
    """Pixels of the zone parts' bounding grids: an upper bound of the tiles' pixels, cheap to compute."""
    total = 0
    for part in parts:
        west, south, east, north = _projected_bounds(part)
        total += math.ceil((east - west) / resolution + 1) * math.ceil((north - south) / resolution + 1)
    return total


def tile_count_problem(parts: list[ZonePart], tile_size: int, resolution: float = RESOLUTION_M) -> str | None:
    """Why the parts would give too many tiles (at most ``MAX_TILES_PER_REGION``), or None."""
    estimate = part_pixels(parts, resolution) // tile_size**2
    if estimate <= MAX_TILES_PER_REGION:
        return None
    return (
        f"would be cut into about {estimate:,} tiles of {tile_size} px, more than {MAX_TILES_PER_REGION:,} "
        "(the most tiles a region may have): raise tiling.tile_size"
    )


def part_tiles(
    part: ZonePart, origin: tuple[float, float], tile_size: int, resolution: float = RESOLUTION_M
) -> list[Area]:
    """The tiles of the zone's lattice that the part covers (with an area > 0), each with its grid."""
    px, py = lattice_phase(origin, resolution)
    side = tile_size * resolution
    # Densified: a part's edges can span degrees (a zone border from 45°N to 55°N), and a straight line
    # between two far vertices in UTM strays kilometres from the meridian or parallel they lie on. The
    # piece keeps these vertices, so the product's mask (which projects the piece's vertices) follows them.
    exact = to_crs(part.geometry.segmentize(ZONE_DENSIFY_DEG), "EPSG:4326", part.crs)
    west, south, east, north = exact.bounds
    shapely.prepare(exact)
    areas = []
    for row in range(math.floor((south - py) / side), math.ceil((north - py) / side)):
        for col in range(math.floor((west - px) / side), math.ceil((east - px) / side)):
            x0, y0 = px + col * side, py + row * side
            tile_box = box(x0, y0, x0 + side, y0 + side)
            if not exact.intersects(tile_box):
                continue
            piece = _polygons(exact.intersection(tile_box.segmentize(TILE_EDGE_DENSIFY_M)))
            if piece is None:
                continue
            grid = _crop(piece.bounds, (x0, y0, x0 + side, y0 + side), part.crs, (px, py), resolution)
            if not _has_pixel(piece, grid, resolution):
                continue  # a sliver between pixel centres: its product would have no pixel
            geometry = shapely.make_valid(to_crs(piece, part.crs, "EPSG:4326"))
            areas.append(Area(tile_id(part, col, row), _polygons(geometry) or geometry, grid))
    return areas


def _has_pixel(piece: BaseGeometry, grid: Grid, resolution: float) -> bool:
    """Whether a pixel centre of the grid lies in the piece (the products' mask keeps those pixels)."""
    if not piece.buffer(-resolution).is_empty or grid.width * grid.height > SLIVER_CHECK_MAX_PIXELS:
        return True  # holds a disk of one pixel's radius, so a pixel centre (or too long to rasterize)
    outside = geometry_mask([piece], out_shape=grid.shape, transform=grid.transform, all_touched=False)
    return not bool(outside.all())


def _crop(
    bounds: tuple[float, float, float, float],
    tile: tuple[float, float, float, float],
    crs: str,
    phase: tuple[float, float],
    resolution: float,
) -> Grid:
    """The grid of the pixels of the lattice that cover ``bounds``, within the tile."""
    px, py = phase
    x0 = max(tile[0], px + math.floor((bounds[0] - px) / resolution) * resolution)
    x1 = min(tile[2], px + math.ceil((bounds[2] - px) / resolution) * resolution)
    y0 = max(tile[1], py + math.floor((bounds[1] - py) / resolution) * resolution)
    y1 = min(tile[3], py + math.ceil((bounds[3] - py) / resolution) * resolution)
    width = max(1, round((x1 - x0) / resolution))
    height = max(1, round((y1 - y0) / resolution))
    return Grid(crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y0 + height * resolution), width, height)


def region_areas(
    geom_wgs84: BaseGeometry,
    grid_origin: Callable[[str], tuple[float, float]],
    tiling: Tiling | None = None,
    resolution: float = RESOLUTION_M,
) -> list[Area]:
    """The output grids of a region: its one grid as always when it fits (``needs_tiles`` false), else
    one per tile of each zone part. ``grid_origin`` gives a point of the source's lattice in a CRS."""
    tiling = tiling or Tiling()
    if not needs_tiles(geom_wgs84, tiling):
        crs = grid_for(geom_wgs84).crs
        return [Area(None, geom_wgs84, grid_for(geom_wgs84, origin=grid_origin(crs), resolution=resolution))]
    problem = utm_range_problem(geom_wgs84)
    if problem:
        raise ValueError(problem)
    parts = zone_parts(geom_wgs84)
    problem = tile_count_problem(parts, tiling.tile_size, resolution)
    if problem:
        raise ValueError(problem)
    areas = []
    for part in parts:
        areas += part_tiles(part, grid_origin(part.crs), tiling.tile_size, resolution)
    return areas
