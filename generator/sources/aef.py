"""The "aef" source: change computed locally from a copy of the AEF COGs (folder, https, s3 or gs).

For each block of the output grid and each year, the tiles whose footprint intersects the block are read
onto the output grid: tiles on the grid's own lattice by a plain windowed read (flipped, since the files
are stored bottom-up), other-zone tiles through a WarpedVRT (nearest). Then de-quantized, renormalized
and compared.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.session import DummySession
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from generator.errors import ConfigError, SourceError
from generator.grid import Grid, to_crs
from generator.methods import EMBEDDING_METHODS, METHODS, dequantize_lut, unit_dot
from generator.sources.aef_index import INDEX_NAME, load_index
from generator.sources.base import AEF_DATASET, Block, Source, SourceInfo
from generator.sources.identity import file_identity
from generator.sources.remote import gdal_options, gdal_path, join, scheme_of
from generator.urls import public_href, redact

BANDS = 64
NODATA = -128
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Blocks computed at once; each holds about 100 MB at most (two 512² × 64 int8 mosaics + float strips)."""
STRIP_ROWS = 64
"""Rows de-quantized to float32 at a time, to keep the float copies of a block small."""
WARP_TOLERANCE_PX = 1e-9
"""Error allowed when GDAL approximates the reprojection: GDAL's default (0.125 px) makes nearest
resampling pick a neighbouring pixel now and then. (0 is refused by rasterio; this is exact enough.)"""
LATTICE_TOLERANCE = 1e-6
"""How far (in pixels) a file's origin may sit from the grid's lattice and still be read without warping."""


@dataclass(frozen=True)
class _Tile:
    fid: int
    href: str
    year: int
    crs: str
    utm_west: float
    utm_north: float
    geometry: BaseGeometry


class AefSource(Source):
    """A mirror of the AEF COGs with its ``aef_index.parquet`` at ``root`` (folder or URL)."""

    def __init__(self, root: str) -> None:
        self._root = root.rstrip("/") if scheme_of(root) else root
        self._index_href = join(self._root, INDEX_NAME)
        if not scheme_of(root) and not Path(root).is_dir():
            raise SourceError(
                f"AEF root {root} does not exist: expected a folder (or an https://, s3:// or gs:// URL) "
                f"holding {INDEX_NAME}"
            )
        index = load_index(self._root)  # the index part: generator/sources/aef_index.py
        self._index_version = index.version
        self._tiles = [
            _Tile(r.fid, r.href, r.year, r.crs, r.utm_west, r.utm_north, r.geometry) for r in index.rows
        ]
        self._tiles.sort(key=lambda t: t.fid)
        self._by_year: dict[int, tuple[list[_Tile], shapely.STRtree]] = {}
        for year in sorted({t.year for t in self._tiles}):
            tiles = [t for t in self._tiles if t.year == year]
            self._by_year[year] = (tiles, shapely.STRtree([t.geometry for t in tiles]))
        self._gdal_options = {**gdal_options(), **index.gdal_options}
        self._pool: ThreadPoolExecutor | None = None

    @property
    def info(self) -> SourceInfo:
        return SourceInfo(
            kind="aef",
            dataset=AEF_DATASET,
            location=public_href(self._root),
            # A local folder means nothing to the catalog's readers elsewhere: link only URLs.
            derived_from=[public_href(self._index_href)] if scheme_of(self._root) else [],
            version=self._index_version,
        )

    def years(self) -> list[int]:
        return list(self._by_year)

    def content_id(self) -> str:
        return file_identity(self._index_href)

    def grid_origin(self, crs: str) -> tuple[float, float]:
        """The north-west corner of the first tile of that zone (tiles share one 10 m lattice per zone)."""
        for tile in self._tiles:
            if tile.crs == crs:
                return (tile.utm_west, tile.utm_north)
        return (0.0, 0.0)

    def has_data(self, geometry_wgs84: BaseGeometry, year: int) -> bool:
        return bool(self._candidates(geometry_wgs84, year))

    def windows(self, grid: Grid) -> list[Window]:
        return list(grid.windows())

    def compute(
        self, grid: Grid, from_year: int, to_year: int, method: str, windows: list[Window]
    ) -> Iterator[Block]:
        from_dot = METHODS[method].from_dot if method in METHODS else None
        if from_dot is None:
            raise ConfigError(f"method '{method}': the aef source computes {', '.join(EMBEDDING_METHODS)}")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="aef-read")

        def one(window: Window) -> Block:
            a = self._mosaic(grid, window, from_year)
            b = self._mosaic(grid, window, to_year)
            return window, _change(a, b, from_dot)

        yield from _bounded_map(self._pool, one, windows, ahead=2 * READ_THREADS)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # --- reading ---------------------------------------------------------------------------------------

    def _candidates(self, geometry_wgs84: BaseGeometry, year: int) -> list[_Tile]:
        if year not in self._by_year:
            return []
        tiles, tree = self._by_year[year]
        return [tiles[i] for i in sorted(tree.query(geometry_wgs84, predicate="intersects"))]

    def _mosaic(self, grid: Grid, window: Window, year: int) -> np.ndarray:
        """The int8 (64, rows, cols) stack of a year on a window; first valid tile wins, −128 elsewhere.

        Tiles of the grid's own zone come first (their pixels are copied, not resampled), then by fid.
        """
        shape = (BANDS, int(window.height), int(window.width))
        out = np.full(shape, NODATA, dtype=np.int8)
        filled = np.zeros(shape[1:], dtype=bool)
        pixel = abs(grid.transform.a)
        west, south, east, north = grid.window_bounds(window)
        area = box(west - pixel, south - pixel, east + pixel, north + pixel).segmentize(pixel * 64)
        tiles = self._candidates(to_crs(area, grid.crs, "EPSG:4326"), year)
        for tile in sorted(tiles, key=lambda t: (t.crs != grid.crs, t.fid)):
            data = self._read(tile, grid, window)
            take = (data[0] != NODATA) & ~filled  # nodata is −128 in all bands at once
            np.copyto(out, data, where=take)
            filled |= take
            if filled.all():
                break
        return out

    def _read(self, tile: _Tile, grid: Grid, window: Window) -> np.ndarray:
        """One tile on a window of the output grid, −128 where it has no data.

        A tile on the grid's own pixel lattice is read directly (and flipped if stored bottom-up); any other
        goes through a WarpedVRT (nearest), which reprojects it.
        """
        try:
            with (
                rasterio.Env(session=DummySession(), **self._gdal_options),
                rasterio.open(gdal_path(tile.href)) as src,
            ):
                if src.count != BANDS:
                    raise SourceError(f"AEF tile {public_href(tile.href)} has {src.count} bands, not {BANDS}")
                rows = _lattice_rows(src.transform, src.crs.to_string(), grid, window)
                if rows is not None:
                    return _read_aligned(src, window, *rows)
                with WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.window_transform(window),
                    width=int(window.width),
                    height=int(window.height),
                    resampling=Resampling.nearest,
                    tolerance=WARP_TOLERANCE_PX,
                    src_nodata=NODATA,
                    nodata=NODATA,
                ) as vrt:
                    return vrt.read().astype(np.int8, copy=False)
        except RasterioError as exc:
            raise SourceError(
                f"AEF tile {public_href(tile.href)} could not be read: {redact(str(exc))}"
            ) from None


def _lattice_rows(transform: Affine, crs: str, grid: Grid, window: Window) -> tuple[int, int, bool] | None:
    """(first row, first col, bottom-up) of the window in a file on the grid's own lattice, else None."""
    t = grid.window_transform(window)
    if crs != grid.crs or transform.b or transform.d or transform.a != t.a or abs(transform.e) != abs(t.e):
        return None
    col = (t.c - transform.c) / transform.a
    if transform.e > 0:  # bottom-up: row 0 is the southern edge
        row = (t.f + t.e * window.height - transform.f) / transform.e
    else:
        row = (t.f - transform.f) / transform.e
    if abs(col - round(col)) > LATTICE_TOLERANCE or abs(row - round(row)) > LATTICE_TOLERANCE:
        return None
    return round(row), round(col), transform.e > 0


def _read_aligned(src: rasterio.DatasetReader, window: Window, row: int, col: int, flip: bool) -> np.ndarray:
    """The window's pixels copied from a file on the same lattice, −128 outside the file."""
    height, width = int(window.height), int(window.width)
    out = np.full((BANDS, height, width), NODATA, dtype=np.int8)
    r0, r1 = max(row, 0), min(row + height, src.height)
    c0, c1 = max(col, 0), min(col + width, src.width)
    if r0 < r1 and c0 < c1:
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
    return out[:, ::-1] if flip else out


def _change(a: np.ndarray, b: np.ndarray, from_dot: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """float32 change of two int8 stacks, NaN where either is nodata; de-quantized strip by strip."""
    lut = dequantize_lut()
    out = np.full(a.shape[1:], np.nan, dtype=np.float32)
    for r0 in range(0, a.shape[1], STRIP_ROWS):
        sa, sb = a[:, r0 : r0 + STRIP_ROWS], b[:, r0 : r0 + STRIP_ROWS]
        valid = ~(sa == NODATA).all(axis=0) & ~(sb == NODATA).all(axis=0)
        if not valid.any():
            continue
        dot = unit_dot(lut[sa.view(np.uint8)], lut[sb.view(np.uint8)])
        out[r0 : r0 + STRIP_ROWS] = np.where(valid, from_dot(dot), np.float32(np.nan))
    return out


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``pool.map`` in order with at most ``ahead`` results pending, so memory stays bounded."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
