"""The output grid of a region: a UTM CRS, 10 m pixels, an affine transform and a shape."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

RESOLUTION_M = 10.0
"""AlphaEarth embeddings are 10 m pixels."""

UTM_ZONE_WIDTH_DEG = 6.0

BLOCK_SIZE = 512
"""Side of the internal tiles of the COGs we write, and of the blocks we compute locally."""


@dataclass(frozen=True)
class Grid:
    """A north-up grid: ``crs`` like "EPSG:32633", ``transform`` (negative y pixel size), shape."""

    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def epsg(self) -> int:
        return int(self.crs.split(":")[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the grid's CRS."""
        west, north = self.transform.c, self.transform.f
        return (west, north + self.transform.e * self.height, west + self.transform.a * self.width, north)

    @property
    def pixel_area_m2(self) -> float:
        return abs(self.transform.a * self.transform.e)

    def windows(self, size: int = BLOCK_SIZE) -> Iterator[Window]:
        """Row-major blocks of at most ``size`` × ``size`` pixels covering the grid."""
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(col, row, min(size, self.width - col), min(size, self.height - row))

    def window_transform(self, window: Window) -> Affine:
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        t = self.window_transform(window)
        return (t.c, t.f + t.e * window.height, t.c + t.a * window.width, t.f)


def utm_zone(lon: float) -> int:
    """The UTM zone number (1-60) of a longitude."""
    return min(int((lon + 180.0) // UTM_ZONE_WIDTH_DEG) + 1, 60)


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS84 UTM zone CRS ("EPSG:326zz" north, "EPSG:327zz" south) containing a point."""
    return f"EPSG:{(32600 if lat >= 0 else 32700) + utm_zone(lon)}"


def to_crs(geom: BaseGeometry, src: str, dst: str) -> BaseGeometry:
    """Reproject a shapely geometry (always_xy: lon/lat order for geographic CRSs)."""
    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return geom
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def grid_for(
    geom_wgs84: BaseGeometry,
    origin: tuple[float, float] = (0.0, 0.0),
    resolution: float = RESOLUTION_M,
) -> Grid:
    """The grid covering a WGS84 geometry in the UTM zone of its centroid.

    Pixel edges fall on ``origin + k * resolution`` so pixels coincide with the source tiles of that zone.
    """
    c = geom_wgs84.centroid
    crs = utm_crs_for(c.x, c.y)
    # Densify before projecting so curved edges of the projected shape stay inside the bounds.
    west, south, east, north = to_crs(geom_wgs84.segmentize(0.01), "EPSG:4326", crs).bounds
    ox, oy = origin
    x0 = ox + math.floor((west - ox) / resolution) * resolution
    x1 = ox + math.ceil((east - ox) / resolution) * resolution
    y0 = oy + math.floor((south - oy) / resolution) * resolution
    y1 = oy + math.ceil((north - oy) / resolution) * resolution
    width = max(1, round((x1 - x0) / resolution))
    height = max(1, round((y1 - y0) / resolution))
    return Grid(crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y1), width, height)


MAX_DEG_FROM_CENTRAL_MERIDIAN = 9.0
"""How far in longitude a region may reach from the central meridian of its grid's UTM zone: its own zone
(±3°) and one neighbouring zone on each side. UTM's scale error grows with the square of that distance
(0.04 % on the central meridian, about 1 % at 9° on the equator) and the projection breaks down towards 90°,
where a whole-world region would get a degenerate grid. Wider regions are cut into tiles per UTM zone
(``generator.tiling``)."""


def central_meridian(zone: int) -> float:
    """The central meridian (degrees east) of a UTM zone."""
    return -183.0 + UTM_ZONE_WIDTH_DEG * zone


def zone_span_problem(geom_wgs84: BaseGeometry) -> str | None:
    """Why a WGS84 geometry is too wide in longitude for one UTM grid, or None when it fits (such regions
    are tiled: ``generator.tiling.needs_tiles``).

    Pure and cheap (bounds only), so configs are checked before any work starts.
    """
    west, _, east, _ = geom_wgs84.bounds
    zone = utm_zone(geom_wgs84.centroid.x)
    meridian = central_meridian(zone)
    reach = max(meridian - west, east - meridian)
    if reach <= MAX_DEG_FROM_CENTRAL_MERIDIAN:
        return None
    first, last = utm_zone(west), utm_zone(east)
    borders = [-180.0 + UTM_ZONE_WIDTH_DEG * z for z in range(first, last)]
    named = ", ".join(_lon(b) for b in borders[:8]) + (", …" if len(borders) > 8 else "")
    return (
        f"spans UTM zones {first}–{last} ({last - first + 1} zones) and reaches {reach:.1f}° from the "
        f"central meridian ({_lon(meridian)}) of zone {zone}, its grid's zone; at most "
        f"{MAX_DEG_FROM_CENTRAL_MERIDIAN:g}° (one zone beyond its own on each side) keeps UTM's distortion "
        f"near 1 %: split it into regions at the zone borders ({named})"
    )


def _lon(value: float) -> str:
    return "0°" if value == 0 else f"{abs(value):g}°{'E' if value > 0 else 'W'}"


def size_problem(geom_wgs84: BaseGeometry, max_pixels: int) -> str | None:
    """Why a WGS84 geometry's grid has too many pixels, with how to split it; None when it fits.

    Call it only for geometries that pass ``zone_span_problem`` (the grid is meaningless otherwise).
    """
    grid = grid_for(geom_wgs84)
    pixels = grid.width * grid.height
    if pixels <= max_pixels:
        return None
    side = math.isqrt(max_pixels)
    cols, rows = math.ceil(grid.width / side), math.ceil(grid.height / side)
    west, south, east, north = geom_wgs84.bounds
    return (
        f"its {RESOLUTION_M:g} m grid is {grid.width:,} × {grid.height:,} = {pixels:,} pixels, more than "
        f"max_pixels ({max_pixels:,}); split it into {cols * rows} regions (e.g. a {cols} × {rows} grid "
        f"of bboxes of {(east - west) / cols:.3g}° × {(north - south) / rows:.3g}°), or raise max_pixels "
        "in the config if the machine has the time and scratch space (several GB per 10⁹ pixels)"
    )
