"""Hotspots with many holes: the outer rings of the block pieces are unioned and their holes put back
(generator.hotspots), which must give exactly the polygon of labelling the whole raster at once."""

from __future__ import annotations

import random

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import box, shape

from generator.grid import Grid
from generator.hotspots import HotspotAccumulator, HotspotParams, with_holes

GRID = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), 90, 100)


def noisy_patch(seed: int) -> np.ndarray:
    """A changed patch whose pixels fall below the threshold at random (holes of one or a few pixels,
    some on block borders, some touching the patch's edge), like the benchmark's noisy change area."""
    rng = np.random.default_rng(seed)
    values = np.zeros(GRID.shape, dtype=np.float32)
    values[8:90, 5:80] = 0.4
    values[rng.random(GRID.shape) < 0.12] = 0.05
    values[50:60, 30:45] = np.nan  # a nodata hole across a block border
    return values


def windows(size: int) -> list[Window]:
    out = list(GRID.windows(size))
    random.Random(size).shuffle(out)  # blocks come in any order
    return out


@pytest.mark.parametrize("size", [16, 7, 33])
@pytest.mark.parametrize("seed", [1, 2])
def test_noisy_hotspots_equal_the_whole_raster_polygons(size: int, seed: int) -> None:
    values = noisy_patch(seed)
    acc = HotspotAccumulator(GRID, HotspotParams(0.2, 0.0))
    for w in windows(size):
        acc.update(w, values[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width])
    found = acc.result()
    with np.errstate(invalid="ignore"):
        labels, n = ndimage.label(values >= 0.2)
    expected = {
        int(v): shape(g)
        for g, v in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=GRID.transform)
    }
    assert len(found) == n
    largest = max(found, key=lambda h: h.pixels)
    assert len(largest.polygon.interiors) > 100  # the case this is about: many holes
    for h in found:
        assert h.polygon.is_valid
        assert h.polygon.geom_type == "Polygon"
        assert h.polygon.area == pytest.approx(h.area_m2)
        (label,) = {int(v) for v in np.unique(labels[_pixels_of(h.polygon)])}
        truth = expected[label]
        assert len(h.polygon.interiors) == len(truth.interiors)
        assert h.polygon.symmetric_difference(truth).area == pytest.approx(0.0, abs=1e-6)


def _pixels_of(polygon) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixel centres inside ``polygon``."""
    rows, cols = np.indices(GRID.shape)
    t = GRID.transform
    x, y = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    inside = shapely.contains_xy(polygon, x, y)
    return rows[inside], cols[inside]


def _ring(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.asarray(box(x0, y0, x1, y1).exterior.coords)


def test_holes_go_to_the_part_that_contains_them() -> None:
    outline = shapely.MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    holes = [_ring(22, 2, 24, 4), _ring(1, 1, 2, 2), _ring(26, 6, 28, 8)]
    result = with_holes(outline, holes)
    assert result.is_valid
    left, right = sorted(shapely.get_parts(result), key=lambda p: p.bounds[0])
    assert len(left.interiors) == 1 and len(right.interiors) == 2
    expected = outline.difference(shapely.union_all([shapely.Polygon(h) for h in holes]))
    assert result.symmetric_difference(expected).area == 0.0
    assert with_holes(outline, []) is outline


def test_a_hole_outside_the_outline_is_refused() -> None:
    outline = shapely.MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    with pytest.raises(ValueError, match="outside every part"):
        with_holes(outline, [_ring(12, 2, 14, 4)])
