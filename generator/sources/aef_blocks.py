"""Work planned on the source files' own block lattice: each file block is decoded once per job.

A *unit* is a rectangle of the output grid read and computed at once: a cell of the files' block lattice
(a whole number of file blocks, about ``UNIT_TARGET_PX`` a side), so that no file block is shared between
two units and none is decoded twice. The *windows* handed to the writer are the unit cells cut further on
the writer's 512-px lattice (``generator.grid.BLOCK_SIZE``), so each window lies inside one output tile.
Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window

from generator.grid import BLOCK_SIZE, Grid

UNIT_TARGET_PX = 1024
"""Side of a unit when file blocks are smaller (a whole number of blocks, at least one block): the real AEF
files have 1024-px blocks, so a unit is one block — 64 MB of int8 per year in memory."""
UNIT_MAX_PX = 4096
"""File blocks larger than this a side (e.g. strips as wide as the file) are cut into ``UNIT_TARGET_PX``
units instead: reading part of a block costs a little re-decoding but keeps memory bounded."""
LATTICE_TOLERANCE = 1e-6
"""How far (in pixels) a file's origin may sit from the grid's lattice and still be read without warping."""


@dataclass(frozen=True)
class Lattice:
    """Cells ``[phase + k·size, phase + (k+1)·size)`` along columns and rows of the output grid."""

    col_phase: int
    col_size: int
    row_phase: int
    row_size: int

    def cells(self, grid: Grid) -> Iterator[Window]:
        """Row-major cells covering the grid, clipped to it."""
        for r0, r1 in _cuts(self.row_phase, self.row_size, grid.height):
            for c0, c1 in _cuts(self.col_phase, self.col_size, grid.width):
                yield Window(c0, r0, c1 - c0, r1 - r0)

    def cell_of(self, row: int, col: int) -> tuple[int, int]:
        """(row index, column index) of the cell holding a pixel of the grid."""
        return (row - self.row_phase) // self.row_size, (col - self.col_phase) // self.col_size


DEFAULT_LATTICE = Lattice(0, BLOCK_SIZE, 0, BLOCK_SIZE)
"""The grid's own 512-px lattice: used when no file of the grid's zone lies on the grid's pixel lattice."""


def _cuts(phase: int, size: int, length: int) -> Iterator[tuple[int, int]]:
    start = phase % size - size if phase % size else 0
    while start < length:
        yield max(start, 0), min(start + size, length)
        start += size


def pixel_offset(transform: Affine, grid: Grid) -> tuple[int, int, bool] | None:
    """(grid row of the file's row-0 edge, grid col of its col-0 edge, bottom-up) for a file on the grid's
    pixel lattice (same pixel size, north-up or south-up, whole-pixel offset); None otherwise."""
    t = grid.transform
    if transform.b or transform.d or transform.a != t.a or abs(transform.e) != abs(t.e):
        return None
    col = (transform.c - t.c) / t.a
    row = (t.f - transform.f) / abs(t.e)
    if abs(col - round(col)) > LATTICE_TOLERANCE or abs(row - round(row)) > LATTICE_TOLERANCE:
        return None
    return round(row), round(col), transform.e > 0


def _unit_size(block: int) -> int:
    if block > UNIT_MAX_PX:
        return UNIT_TARGET_PX
    return block * max(1, UNIT_TARGET_PX // block)


def file_lattice(transform: Affine, block_shape: tuple[int, int], grid: Grid) -> Lattice | None:
    """The lattice of a file's blocks on the output grid, or None if the file is not on its pixel lattice.

    A bottom-up file's block rows start at its southern edge (its row 0); its row-0 edge lies on grid row
    ``row`` and its block edges on ``row − k·height``, a top-down file's on ``row + k·height``: both are
    ``row mod height`` on the grid.
    """
    offset = pixel_offset(transform, grid)
    if offset is None:
        return None
    row, col, _ = offset
    block_rows, block_cols = block_shape
    return Lattice(col % block_cols, _unit_size(block_cols), row % block_rows, _unit_size(block_rows))


def windows_on(lattice: Lattice, grid: Grid) -> list[Window]:
    """Output windows: the lattice's cells cut on the writer's lattice, grouped cell by cell."""
    out = []
    writer = DEFAULT_LATTICE
    for cell in lattice.cells(grid):
        r0, c0 = int(cell.row_off), int(cell.col_off)
        r1, c1 = r0 + int(cell.height), c0 + int(cell.width)
        for wr0, wr1 in _cuts(writer.row_phase, writer.row_size, grid.height):
            if wr1 <= r0 or wr0 >= r1:
                continue
            for wc0, wc1 in _cuts(writer.col_phase, writer.col_size, grid.width):
                if wc1 <= c0 or wc0 >= c1:
                    continue
                top, left = max(r0, wr0), max(c0, wc0)
                out.append(Window(left, top, min(c1, wc1) - left, min(r1, wr1) - top))
    return out


def group_units(lattice: Lattice, windows: Iterable[Window]) -> list[tuple[Window, list[Window]]]:
    """Windows grouped by the lattice cell holding their top-left pixel, each group with its unit: the
    bounding box of its windows (the cell itself for windows from ``windows_on``). Groups keep the order in
    which their first window came."""
    groups: dict[tuple[int, int], list[Window]] = {}
    for w in windows:
        groups.setdefault(lattice.cell_of(int(w.row_off), int(w.col_off)), []).append(w)
    out = []
    for members in groups.values():
        r0 = min(int(w.row_off) for w in members)
        c0 = min(int(w.col_off) for w in members)
        r1 = max(int(w.row_off + w.height) for w in members)
        c1 = max(int(w.col_off + w.width) for w in members)
        out.append((Window(c0, r0, c1 - c0, r1 - r0), members))
    return out
