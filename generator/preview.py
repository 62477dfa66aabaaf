"""Embedding context pictures: a small RGB picture of each year's embedding, as the seed study showed them.

Bands A01, A16, A09 (red, green, blue) of the unit-length embedding vectors, stretched linearly over
−0.3…0.3 to 0…255, at the item's thumbnail size. The seed visualized Earth Engine's own values, which are
unit length; the AEF copies hold int8 values that are de-quantized and renormalized to unit length first
(DESIGN.md), so both sources draw the same vectors.

The pictures come from the data a job reads anyway. The picture's pixel (i, j) is the grid pixel holding
its centre (nearest sampling of pixel centres): grid row ``((2i + 1) × height) // (2 × rows)``, likewise for
columns. The AEF source takes those pixels from the int8 stacks of each unit (``sample_unit``, small arrays
out, picklable) and a ``PreviewCollector`` in the writing process puts them together; the Earth Engine
source asks for the three bands on the picture's grid, one small request per year.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from generator.fsmode import make_public
from generator.grid import Grid
from generator.quicklook import THUMBNAIL_SIDE, quicklook_shape

PREVIEW_BANDS = ("A01", "A16", "A09")
"""Embedding bands drawn as red, green, blue: the seed study's visualization (bands A00…A63)."""
BAND_INDICES = tuple(int(b[1:]) for b in PREVIEW_BANDS)
"""Their positions in the 64-band stacks (A00 is band index 0)."""
STRETCH = (-0.3, 0.3)
"""Unit-vector components mapped linearly onto 0…255 (clipped): the seed study's min/max."""
ASSET_PREFIX = "embedding_"
"""Assets are keyed ``embedding_{year}`` (file ``embedding_{year}.png`` beside the change COG)."""
NODATA = -128
"""AEF int8 nodata, −128 in all bands at once."""
QUANT_SCALE = 127.5
"""AEF de-quantization: x = (v / 127.5)² × sign(v) (DESIGN.md)."""


@dataclass(frozen=True)
class PreviewPlan:
    """The picture of a grid: its size (the thumbnail's) and which grid pixels it samples."""

    grid: Grid
    rows: int
    cols: int

    @property
    def transform(self) -> Affine:
        """The picture's own geotransform (pixels ``height / rows`` × ``width / cols`` grid pixels)."""
        g = self.grid
        return g.transform @ Affine.scale(g.width / self.cols, g.height / self.rows)

    @property
    def picture_grid(self) -> Grid:
        """The picture as a grid of its own, for sources that compute on any grid (Earth Engine)."""
        return Grid(self.grid.crs, self.transform, self.cols, self.rows)

    def row_index(self) -> np.ndarray:
        """Grid row sampled by each picture row: the one holding the picture pixel's centre."""
        return centre_index(self.rows, self.grid.height)

    def col_index(self) -> np.ndarray:
        return centre_index(self.cols, self.grid.width)


def preview_plan(grid: Grid) -> PreviewPlan:
    """The picture of ``grid`` at the thumbnail's size (aspect kept, ≤ THUMBNAIL_SIDE, never upscaled)."""
    rows, cols = quicklook_shape(grid.width, grid.height, THUMBNAIL_SIDE)
    return PreviewPlan(grid, rows, cols)


def centre_index(n_out: int, n_in: int) -> np.ndarray:
    """Index of the input pixel holding the centre of each of ``n_out`` output pixels (exact integers)."""
    return (2 * np.arange(n_out, dtype=np.int64) + 1) * n_in // (2 * n_out)


def unit_rgb(raw: np.ndarray) -> np.ndarray:
    """int8 AEF vectors (64, ...) → float32 (3, ...) of PREVIEW_BANDS after de-quantization and
    renormalization to unit length; NaN where the pixel is nodata or its vector has zero length."""
    v = raw.astype(np.float32)
    x = (v / np.float32(QUANT_SCALE)) ** 2 * np.sign(v)
    norm = np.sqrt(np.einsum("b...,b...->...", x, x))
    valid = ~(raw == NODATA).all(axis=0) & (norm > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = x[list(BAND_INDICES)] / norm
    return np.where(valid, rgb, np.float32(np.nan)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class PreviewSamples:
    """What one unit of work hands back beside its change blocks: the picture pixels it holds."""

    rows: np.ndarray  # picture rows (int64)
    cols: np.ndarray  # picture columns (int64)
    values: np.ndarray  # float32 (stacks, 3, len(rows), len(cols)), NaN = nodata; stacks in the order given


def sample_unit(plan: PreviewPlan, cell: Window, stacks: Sequence[np.ndarray]) -> PreviewSamples | None:
    """The picture pixels whose sampled grid pixel lies in ``cell``, from each int8 (64, h, w) stack of
    ``cell`` (one per year); None when the cell holds none. Small arrays only: at most the picture's."""
    r0, c0 = int(cell.row_off), int(cell.col_off)
    ri, ci = plan.row_index(), plan.col_index()
    rows = np.flatnonzero((ri >= r0) & (ri < r0 + int(cell.height)))
    cols = np.flatnonzero((ci >= c0) & (ci < c0 + int(cell.width)))
    if rows.size == 0 or cols.size == 0:
        return None
    take = np.ix_(ri[rows] - r0, ci[cols] - c0)
    values = np.stack([unit_rgb(stack[:, take[0], take[1]]) for stack in stacks])
    return PreviewSamples(rows, cols, values)


class PreviewCollector:
    """The pictures of some years of one grid, put together from samples or whole pictures (bounded:
    picture-sized arrays only). ``years`` are the years wanted; ``stack_years`` the years of the stacks in
    the samples handed to ``add`` (e.g. a job's (from, to))."""

    def __init__(self, plan: PreviewPlan, years: Sequence[int]) -> None:
        self.plan = plan
        self.values = {y: np.full((3, plan.rows, plan.cols), np.nan, dtype=np.float32) for y in years}
        self._filled: set[int] = set()

    def missing(self) -> list[int]:
        """Years no source has filled yet, ascending."""
        return sorted(set(self.values) - self._filled)

    def add(self, samples: PreviewSamples | None, stack_years: Sequence[int]) -> None:
        """Place a unit's samples; ``stack_years[k]`` is the year of ``samples.values[k]``."""
        self._filled.update(y for y in stack_years if y in self.values)
        if samples is None:
            return
        take = np.ix_(samples.rows, samples.cols)
        for k, year in enumerate(stack_years):
            if year in self.values:
                self.values[year][:, take[0], take[1]] = samples.values[k]

    def put(self, year: int, values: np.ndarray) -> None:
        """A whole picture: float32 (3, rows, cols), NaN = nodata."""
        expected = (3, self.plan.rows, self.plan.cols)
        if values.shape != expected:
            raise ValueError(f"embedding picture of {year} has shape {values.shape}, expected {expected}")
        self.values[year] = values.astype(np.float32, copy=False)
        self._filled.add(year)


def stretch(values: np.ndarray) -> np.ndarray:
    """Unit-vector components → bytes: linear over STRETCH to 0…255, clipped, rounded to nearest."""
    lo, hi = STRETCH
    scaled = (values.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)


def rgba(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """float32 (3, rows, cols) → RGBA uint8 (rows, cols, 4): transparent (all 0) where any band is NaN or
    the pixel is outside the region (``inside`` False)."""
    valid = np.isfinite(values).all(axis=0) & inside
    out = np.zeros((*values.shape[1:], 4), dtype=np.uint8)
    out[..., :3] = np.moveaxis(stretch(values), 0, -1)
    out[..., 3] = 255
    out[~valid] = 0
    return out


def region_mask(plan: PreviewPlan, region: BaseGeometry) -> np.ndarray:
    """True where the sampled grid pixel's centre lies in ``region`` (in the grid's CRS): the same pixels
    as the change COG keeps (``mask_outside``)."""
    t = plan.grid.transform
    xs = t.c + (plan.col_index() + 0.5) * t.a
    ys = t.f + (plan.row_index() + 0.5) * t.e
    gx, gy = np.meshgrid(xs, ys)
    return shapely.contains_xy(region, gx, gy)


def preview_name(year: int) -> str:
    return f"{ASSET_PREFIX}{year}.png"


def write_preview(path: Path, values: np.ndarray, inside: np.ndarray) -> None:
    """Write the picture as an RGBA PNG atomically (mode as a plain ``open`` gives)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(rgba(values, inside)).save(f, format="PNG")
        make_public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
