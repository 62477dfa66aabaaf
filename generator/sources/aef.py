"""The "aef" source: change computed locally from a copy of the AEF COGs (folder, https, s3 or gs).

The work is planned on the files' own block lattice (``aef_blocks``): each unit is a whole number of file
blocks, read once per year by a pool of threads (GDAL releases the GIL) from datasets kept open for the
job (``aef_read``). Tiles on the grid's own lattice are read by a plain windowed read (flipped, since the
files are stored bottom-up), other-zone tiles through a WarpedVRT (nearest). The two int8 stacks are then
compared in one fused pass (``generator.kernel``) and the unit is cut into the writer's windows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from generator.cluster import Lookahead, TaskStream, ThreadExecutor, worker_address
from generator.errors import ChangecatError, ConfigError, SourceError
from generator.grid import Grid, to_crs
from generator.kernel import unit_dot_int8
from generator.methods import EMBEDDING_METHODS, METHODS
from generator.preview import PreviewCollector, PreviewPlan, PreviewSamples, preview_plan, sample_unit
from generator.sources.aef_blocks import (
    DEFAULT_LATTICE,
    Lattice,
    file_lattice,
    group_units,
    pixel_offset,
    windows_on,
)
from generator.sources.aef_cost import BlockKey, BlockTally, aligned_file_window, warped_file_window
from generator.sources.aef_index import INDEX_NAME, IndexRow, load_index
from generator.sources.aef_read import FileFacts, Reader, check_bands, interruptible
from generator.sources.base import AEF_DATASET, Block, Cost, Source, SourceInfo
from generator.sources.identity import file_identity
from generator.sources.remote import gdal_options, join, scheme_of
from generator.urls import public_href

BANDS = 64
NODATA = -128
READ_THREADS = max(2, min(4, os.cpu_count() or 1))
"""Units read and computed at once; each holds about 140 MB at most (two 1024² × 64 int8 stacks + the
float64 cosine), so the job stays well under 1 GiB; at least 2 so reading overlaps computing."""
UnitExtra = Callable[[Window, np.ndarray, np.ndarray], Any]
"""Something more a unit takes from its cell's two int8 stacks (cell, from-year stack, to-year stack)."""
UnitResult = tuple[list[Block], Any]
"""A unit's change blocks, and what its ``UnitExtra`` returned (None without one)."""
WARP_TOLERANCE_PX = 1e-9
"""Error allowed when GDAL approximates the reprojection: GDAL's default (0.125 px) makes nearest
resampling pick a neighbouring pixel now and then. (0 is refused by rasterio; this is exact enough.)"""


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
        self._tiles = [r for r in index.rows]
        self._tiles.sort(key=lambda t: t.fid)
        self._by_year: dict[int, tuple[list[IndexRow], shapely.STRtree]] = {}
        for year in sorted({t.year for t in self._tiles}):
            tiles = [t for t in self._tiles if t.year == year]
            self._by_year[year] = (tiles, shapely.STRtree([t.geometry for t in tiles]))
        self._gdal_options = {**gdal_options(), **index.gdal_options}
        self._reader: Reader | None = None
        self._lattices: dict[Grid, Lattice] = {}
        self._lookahead = Lookahead()

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
        """Windows cut on the block lattice of the grid's own files, so each file block is decoded once
        (see ``aef_blocks``); the grid's 512-px lattice when no file of its zone is on its pixel lattice."""
        return windows_on(self._lattice(grid), grid)

    def compute(
        self,
        grid: Grid,
        from_year: int,
        to_year: int,
        method: str,
        windows: list[Window],
        preview: PreviewCollector | None = None,
    ) -> Iterator[Block]:
        """Change blocks; with ``preview``, its pictures are filled from the stacks read (no extra read).
        Every unit samples the picture pixels it holds (small arrays), so a stream started early by
        ``prefetch`` serves a job with or without pictures."""
        _from_dot(method)
        years = (from_year, to_year)
        plan = preview.plan if preview is not None else preview_plan(grid)
        stream = self._lookahead.take((grid, from_year, to_year, method, tuple(windows)))
        if stream is None or plan != preview_plan(grid):
            if stream is not None:
                stream.cancel()
            stream = self._stream(grid, from_year, to_year, method, windows, plan)
        if preview is not None:
            preview.add(None, years)  # this job's stacks are the pictures of its two years
        try:
            for blocks, samples in stream:
                if preview is not None:
                    preview.add(samples, years)
                yield from blocks
        finally:
            stream.cancel()
            self._close_reader()  # datasets live for the job: the next job opens what it needs

    def prefetch(self, grid: Grid, from_year: int, to_year: int, method: str, windows: list[Window]) -> None:
        """On a cluster, submit a later job's first units now (they run when the current job's leave
        workers idle); the job's ``compute`` takes them up. Nothing without a cluster or without data."""
        key = (grid, from_year, to_year, method, tuple(windows))
        remote = self.executor is not None and self.executor.remote
        if not remote or key in self._lookahead or method not in METHODS:
            return
        area = to_crs(box(*grid.bounds), grid.crs, "EPSG:4326")
        if all(self._candidates(area, y) for y in (from_year, to_year)):
            self._lookahead.put(key, self._stream(grid, from_year, to_year, method, windows))

    def worker_check(self) -> Callable[[], None]:
        return partial(check_worker, self._worker_root())

    def _stream(
        self,
        grid: Grid,
        from_year: int,
        to_year: int,
        method: str,
        windows: list[Window],
        plan: PreviewPlan | None = None,
    ) -> TaskStream[UnitResult]:
        """The job's units submitted to the executor (this process's threads by default), in order; each
        also samples the pixels of ``plan``'s picture (default: the grid's, ``preview.preview_plan``)."""
        extra = partial(_sample_preview, plan or preview_plan(grid))
        units = group_units(self._lattice(grid), windows)
        if self.executor is not None and self.executor.remote:
            task = partial(unit_task, self._worker_root(), grid, from_year, to_year, method, extra)
            return self.executor.map(task, units)
        reader = self._job_reader()
        task = partial(compute_unit, self, reader, grid, from_year, to_year, method, extra)
        return ThreadExecutor(READ_THREADS).map(task, units, ahead=READ_THREADS + 1)

    def _worker_root(self) -> str:
        """The root as workers open it: URLs as they are, folders absolute (a worker's cwd differs)."""
        return self._root if scheme_of(self._root) else str(Path(self._root).resolve())

    def coverage(self, geometry_wgs84: BaseGeometry, year: int) -> BaseGeometry:
        """The part of the geometry inside the index footprints of the year's files."""
        tiles = self._candidates(geometry_wgs84, year)
        if not tiles:
            return Polygon()
        return shapely.union_all([t.geometry for t in tiles]).intersection(geometry_wgs84)

    def cost(self, grid: Grid, from_year: int, to_year: int, windows: list[Window]) -> Cost:
        """The file blocks ``compute`` reads for these windows and their compressed bytes, from the files'
        headers: the same units, candidate tiles and order as ``_mosaic``. A unit stops taking tiles once
        the footprints of those taken cover its pixel centres (the run stops once their pixels are valid:
        the same unless a file holds nodata inside its footprint). Exact for tiles on the grid's lattice;
        other-zone tiles (warped) are GDAL's estimated source window (``aef_cost``)."""
        blocks, exact = self.blocks_to_read(grid, from_year, to_year, windows)
        return Cost(blocks=len(blocks), bytes=sum(blocks.values()), exact=exact)

    def blocks_to_read(
        self, grid: Grid, from_year: int, to_year: int, windows: list[Window]
    ) -> tuple[dict[BlockKey, int], bool]:
        """({(href, byte offset): compressed size} of the file blocks ``compute`` reads, whether exact):
        what ``cost`` sums up, listed for checking against what a server sends."""
        tally = BlockTally()
        reader = self._job_reader()
        try:
            for cell, _ in group_units(self._lattice(grid), windows):
                for year in (from_year, to_year):
                    self._tally_mosaic(tally, reader, grid, cell, year)
            return interruptible(lambda: tally.blocks(reader)), tally.exact
        finally:
            self.close()

    def _tally_mosaic(self, tally: BlockTally, reader: Reader, grid: Grid, window: Window, year: int) -> None:
        """What ``_mosaic`` reads for a window and year, added to ``tally`` (no pixel read)."""
        pixel = abs(grid.transform.a)
        west, south, east, north = grid.window_bounds(window)
        area = box(west - pixel, south - pixel, east + pixel, north + pixel).segmentize(pixel * 64)
        centres = box(west + pixel / 2, south + pixel / 2, east - pixel / 2, north - pixel / 2)
        filled: BaseGeometry = Polygon()
        tiles = self._candidates(to_crs(area, grid.crs, "EPSG:4326"), year)
        for tile in sorted(tiles, key=lambda t: (t.crs != grid.crs, t.fid)):
            facts = reader.facts(tile.href)
            offset = pixel_offset(facts.transform, grid) if facts.crs == grid.crs else None
            if offset is not None:
                file_window = aligned_file_window(facts, window, *offset)
            else:
                file_window = warped_file_window(facts, grid, window)
            if file_window is None:
                continue
            tally.add(tile.href, facts, file_window, exact=offset is not None)
            footprint = to_crs(tile.geometry.segmentize(pixel / 1e4), "EPSG:4326", grid.crs)
            filled = filled.union(footprint)
            if filled.covers(centres):
                break

    def close(self) -> None:
        self._lookahead.clear()
        self._close_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- reading ---------------------------------------------------------------------------------------

    def _job_reader(self) -> Reader:
        if self._reader is None:
            self._reader = Reader(self._gdal_options)
        return self._reader

    def _lattice(self, grid: Grid) -> Lattice:
        """The block lattice of the first file (by year, fid) of the grid's zone that covers part of it."""
        if grid not in self._lattices:
            lattice = DEFAULT_LATTICE
            area = to_crs(box(*grid.bounds), grid.crs, "EPSG:4326")
            for year in self._by_year:
                tiles = [t for t in self._candidates(area, year) if t.crs == grid.crs]
                if tiles:
                    reader = self._job_reader()
                    facts = interruptible(lambda r=reader, h=tiles[0].href: r.facts(h))
                    lattice = file_lattice(facts.transform, facts.block_shape, grid) or DEFAULT_LATTICE
                    break
            self._lattices[grid] = lattice
        return self._lattices[grid]

    def _candidates(self, geometry_wgs84: BaseGeometry, year: int) -> list[IndexRow]:
        if year not in self._by_year:
            return []
        tiles, tree = self._by_year[year]
        return [tiles[i] for i in sorted(tree.query(geometry_wgs84, predicate="intersects"))]

    def _mosaic(self, reader: Reader, grid: Grid, window: Window, year: int) -> np.ndarray:
        """The int8 (64, rows, cols) stack of a year on a window; first valid tile wins, −128 elsewhere.

        Tiles of the grid's own zone come first (their pixels are copied, not resampled), then by fid. A
        window filled by its first tile is returned as read (a flipped view for bottom-up files).
        """
        shape = (BANDS, int(window.height), int(window.width))
        out: np.ndarray | None = None
        filled = np.zeros(shape[1:], dtype=bool)
        pixel = abs(grid.transform.a)
        west, south, east, north = grid.window_bounds(window)
        area = box(west - pixel, south - pixel, east + pixel, north + pixel).segmentize(pixel * 64)
        tiles = self._candidates(to_crs(area, grid.crs, "EPSG:4326"), year)
        for tile in sorted(tiles, key=lambda t: (t.crs != grid.crs, t.fid)):
            data = self._read(reader, tile, grid, window)
            if data is None:  # the footprint only touches the window's buffer: no pixel of it inside
                continue
            take = (data[0] != NODATA) & ~filled  # nodata is −128 in all bands at once
            if out is None and take.all():
                return data
            if out is None:
                out = np.full(shape, NODATA, dtype=np.int8)
            np.copyto(out, data, where=take)
            filled |= take
            del data
            if filled.all():
                break
        return out if out is not None else np.full(shape, NODATA, dtype=np.int8)

    def _read(self, reader: Reader, tile: IndexRow, grid: Grid, window: Window) -> np.ndarray | None:
        """One tile on a window of the output grid, −128 where it has no data (None: a tile on the grid's
        lattice with no pixel in the window).

        A tile on the grid's own pixel lattice is read directly (flipped if stored bottom-up); any other
        goes through a WarpedVRT (nearest), which reprojects it.
        """
        facts = reader.facts(tile.href)
        if facts.count != BANDS:
            raise SourceError(f"AEF tile {public_href(tile.href)} has {facts.count} bands, not {BANDS}")
        offset = pixel_offset(facts.transform, grid) if facts.crs == grid.crs else None
        if offset is not None:
            return _read_aligned(reader, tile.href, facts, window, *offset)

        def warped(src: rasterio.DatasetReader) -> np.ndarray:
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
                return check_bands(vrt.read().astype(np.int8, copy=False))

        return reader.call(tile.href, warped)


def _read_aligned(
    reader: Reader, href: str, facts: FileFacts, window: Window, row: int, col: int, bottom_up: bool
) -> np.ndarray | None:
    """The window's pixels from a file on the grid's lattice whose row-0 edge is grid row ``row`` and
    col-0 edge grid col ``col``; −128 outside the file, None if no pixel of the file is in the window.
    A bottom-up file's row r is grid row row − 1 − r."""
    g0, c0 = int(window.row_off), int(window.col_off)
    g1, c1 = g0 + int(window.height), c0 + int(window.width)
    file_window = aligned_file_window(facts, window, row, col, bottom_up)  # also what ``cost`` counts
    if file_window is None:
        return None
    fc0, fr0 = int(file_window.col_off), int(file_window.row_off)
    fr1 = fr0 + int(file_window.height)
    data = reader.read(href, file_window)
    if bottom_up:
        data = data[:, ::-1]
        top = row - fr1 - g0  # grid row of the last file row read, relative to the window
    else:
        top = fr0 + row - g0
    left = fc0 + col - c0
    if top == 0 and left == 0 and data.shape[1:] == (g1 - g0, c1 - c0):
        return data
    out = np.full((BANDS, g1 - g0, c1 - c0), NODATA, dtype=np.int8)
    out[:, top : top + data.shape[1], left : left + data.shape[2]] = data
    return out


def _from_dot(method: str) -> Callable[[np.ndarray], np.ndarray]:
    from_dot = METHODS[method].from_dot if method in METHODS else None
    if from_dot is None:
        raise ConfigError(f"method '{method}': the aef source computes {', '.join(EMBEDDING_METHODS)}")
    return from_dot


def _sample_preview(plan: PreviewPlan, cell: Window, a: np.ndarray, b: np.ndarray) -> PreviewSamples | None:
    """A ``UnitExtra``: the picture pixels of both years' stacks that the unit's cell holds."""
    return sample_unit(plan, cell, (a, b))


def compute_unit(
    source: AefSource,
    reader: Reader,
    grid: Grid,
    from_year: int,
    to_year: int,
    method: str,
    extra: UnitExtra | None,
    unit: tuple[Window, list[Window]],
) -> UnitResult:
    """One unit of a job: both years' int8 stacks of its cell read, compared, cut into the writer's windows;
    with ``extra``, also what it takes from the stacks (small: e.g. samples for a preview). Pure in its
    inputs (a rerun gives the same result), so a cluster may run it twice."""
    cell, members = unit
    a = source._mosaic(reader, grid, cell, from_year)
    b = source._mosaic(reader, grid, cell, to_year)
    values = _from_dot(method)(unit_dot_int8(a, b)).astype(np.float32, copy=False)
    more = extra(cell, a, b) if extra is not None else None
    del a, b
    r0, c0 = int(cell.row_off), int(cell.col_off)
    blocks = [
        (w, values[w.row_off - r0 : w.row_off - r0 + w.height, w.col_off - c0 : w.col_off - c0 + w.width])
        for w in members
    ]
    return blocks, more


_worker_sources: dict[str, AefSource] = {}
_worker_lock = threading.Lock()


def worker_source(root: str) -> AefSource:
    """The source at ``root`` as this process (a cluster worker) opens it once and keeps: its index, and a
    reader whose open datasets serve every later task of the worker. A SourceError names the worker."""
    with _worker_lock:
        if root not in _worker_sources:
            try:
                _worker_sources[root] = AefSource(root)
            except ChangecatError as exc:
                error = SourceError(
                    f"worker {worker_address()} cannot open the AEF source {public_href(root)}: {exc}"
                )
            else:
                return _worker_sources[root]
        else:
            return _worker_sources[root]
    raise error  # outside the except block: no chained error that the client could not unpickle


def check_worker(root: str) -> None:
    """Run on every worker before a cluster run: the source opens there (its index is read)."""
    worker_source(root)


def unit_task(
    root: str,
    grid: Grid,
    from_year: int,
    to_year: int,
    method: str,
    extra: UnitExtra | None,
    unit: tuple[Window, list[Window]],
) -> UnitResult:
    """``compute_unit`` as a dask task: the worker reads the source itself, from ``root``."""
    source = worker_source(root)
    try:
        return compute_unit(source, source._job_reader(), grid, from_year, to_year, method, extra, unit)
    except SourceError as exc:
        error = type(exc)(f"worker {worker_address()}: {exc}")
    raise error  # outside the except block: no chained GDAL error that the client could not unpickle
