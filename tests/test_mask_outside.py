"""mask_outside: pixels whose centre is outside the region become nodata; blocks wholly inside pass as
they are (the fast path of issue 7), and the result equals masking the whole grid at once."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import Polygon

from changecat.pipeline import mask_outside
from generator.grid import Grid

GRID = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), 97, 83)
# A concave region whose edges cut blocks at odd places, with a vertex on a block corner.
REGION = Polygon(
    [(400055, 5799985), (400900, 5799960), (400930, 5799500), (400560, 5799520), (400480, 5799200),
     (400160, 5799180), (400100, 5799600)]
)  # fmt: skip


def test_masked_blocks_equal_masking_the_whole_grid_and_inside_blocks_are_not_copied() -> None:
    values = np.arange(GRID.width * GRID.height, dtype=np.float32).reshape(GRID.shape) + 1
    windows = list(GRID.windows(16))
    blocks = [(w, values[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]) for w in windows]
    out = np.full(GRID.shape, -1.0, dtype=np.float32)
    passed = 0
    for (window, given), (same, masked) in zip(blocks, mask_outside(iter(blocks), REGION, GRID), strict=True):
        assert same == window
        passed += masked is given
        out[
            window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width
        ] = masked
    outside = geometry_mask([REGION], out_shape=GRID.shape, transform=GRID.transform, all_touched=False)
    expected = np.where(outside, np.nan, values)
    np.testing.assert_array_equal(out, expected)
    assert 0 < passed < len(windows)  # some blocks wholly inside (not copied), some cut by the edge
    assert np.isnan(out).any() and not np.isnan(out).all()


def test_every_band_is_masked() -> None:
    rgb = np.ones((3, 16, 16), dtype=np.uint16)
    window = next(iter(GRID.windows(16)))  # the north-west block: cut by the region's edge
    ((_, masked),) = list(mask_outside(iter([(window, rgb)]), REGION, GRID, nodata=0))
    assert (masked == 0).any() and (masked == 1).any()
    assert (masked[0] == masked[1]).all() and (masked[0] == masked[2]).all()
