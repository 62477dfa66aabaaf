"""What an AEF run will read, before it reads a pixel: the file windows each unit asks for, and the file
blocks (with their compressed sizes from the TIFF tile byte counts) behind them.

``AefSource.cost`` walks the units and tiles exactly as ``AefSource.compute`` does (``aef_blocks`` lattice,
the candidate tiles of ``_mosaic`` in the same order) and hands the file windows to a ``BlockTally``, which
reads only the files' headers (``BLOCK_OFFSET_x_y`` / ``BLOCK_SIZE_x_y`` of GDAL's TIFF metadata domain).
Windows of tiles on the grid's pixel lattice are exact; windows of tiles read through a WarpedVRT (another
UTM zone) are GDAL's source window as ``warped_file_window`` computes it, an estimate (GDAL's warper picks
its own chunks), so such a cost is marked inexact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.enums import Interleaving
from rasterio.windows import Window

from generator.grid import Grid
from generator.sources.aef_read import FileFacts, Reader

WARP_EDGE_SAMPLES = 21
"""Points sampled along each edge of a destination window to find its source window: GDAL's warper samples
21 points per edge too (GDALWarpOperation::ComputeSourceWindow, SAMPLE_STEPS default)."""

BlockKey = tuple[str, int]
"""(href, byte offset of a block in its file)."""


def aligned_file_window(
    facts: FileFacts, window: Window, row: int, col: int, bottom_up: bool
) -> Window | None:
    """The file's pixel window (col, row offsets in file order) holding a grid window, for a file on the
    grid's lattice whose row-0 edge is grid row ``row`` and col-0 edge grid col ``col``; None if no pixel of
    the file is in the window. A bottom-up file's row r is grid row row − 1 − r."""
    g0, c0 = int(window.row_off), int(window.col_off)
    g1, c1 = g0 + int(window.height), c0 + int(window.width)
    fc0, fc1 = max(c0 - col, 0), min(c1 - col, facts.width)
    fr0, fr1 = (row - g1, row - g0) if bottom_up else (g0 - row, g1 - row)
    fr0, fr1 = max(fr0, 0), min(fr1, facts.height)
    if fr0 >= fr1 or fc0 >= fc1:
        return None
    return Window(fc0, fr0, fc1 - fc0, fr1 - fr0)


def warped_file_window(facts: FileFacts, grid: Grid, window: Window) -> Window | None:
    """The file window a nearest-neighbour WarpedVRT reads for a grid window in another CRS: the pixel
    edges of the window's border, sampled as GDAL's warper samples them, projected into the file's pixel
    space, floored/ceiled and clipped to the file. None if it falls outside the file."""
    t = grid.window_transform(window)
    w, h = int(window.width), int(window.height)
    steps = np.linspace(0.0, 1.0, WARP_EDGE_SAMPLES)
    cols = np.concatenate([steps * w, steps * w, np.zeros_like(steps), np.full_like(steps, w)])
    rows = np.concatenate([np.zeros_like(steps), np.full_like(steps, h), steps * h, steps * h])
    xs, ys = t.c + cols * t.a, t.f + rows * t.e
    fx, fy = (
        np.asarray(v) for v in Transformer.from_crs(grid.crs, facts.crs, always_xy=True).transform(xs, ys)
    )
    inv = ~facts.transform
    fc, fr = inv.a * fx + inv.b * fy + inv.c, inv.d * fx + inv.e * fy + inv.f
    c0, c1 = max(math.floor(float(np.min(fc))), 0), min(math.ceil(float(np.max(fc))), facts.width)
    r0, r1 = max(math.floor(float(np.min(fr))), 0), min(math.ceil(float(np.max(fr))), facts.height)
    if c0 >= c1 or r0 >= r1:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def block_cells(window: Window, block_shape: tuple[int, int]) -> Iterable[tuple[int, int]]:
    """(block column, block row) of every file block a file window touches."""
    bh, bw = block_shape
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    for by in range((r0 // bh), (r1 - 1) // bh + 1):
        for bx in range((c0 // bw), (c1 - 1) // bw + 1):
            yield bx, by


class BlockTally:
    """File windows a run reads, turned into the distinct file blocks behind them and their bytes."""

    def __init__(self) -> None:
        self._cells: dict[str, set[tuple[int, int]]] = {}
        self._block_shape: dict[str, tuple[int, int]] = {}
        self.exact = True

    def add(self, href: str, facts: FileFacts, window: Window, exact: bool = True) -> None:
        self._block_shape[href] = facts.block_shape
        self._cells.setdefault(href, set()).update(block_cells(window, facts.block_shape))
        self.exact = self.exact and exact

    def blocks(self, reader: Reader) -> dict[BlockKey, int]:
        """{(href, offset): compressed size} of every block to read, all bands (header reads only)."""
        out: dict[BlockKey, int] = {}
        for href, cells in self._cells.items():
            ordered = sorted(cells)
            out.update(reader.call(href, lambda src, c=ordered, h=href: _block_sizes(src, h, c)))
        return out


def _block_sizes(src: rasterio.DatasetReader, href: str, cells: list[tuple[int, int]]) -> dict[BlockKey, int]:
    """The blocks of ``cells`` in every band (once for pixel-interleaved files, whose blocks hold all
    bands), keyed by byte offset; sparse blocks (offset or size 0) are never fetched and not counted."""
    bands = [1] if src.interleaving == Interleaving.pixel else range(1, src.count + 1)
    out: dict[BlockKey, int] = {}
    for band in bands:
        for bx, by in cells:
            offset = int(src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=band) or 0)
            size = int(src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=band) or 0)
            if offset and size:
                out[(href, offset)] = size
    return out
