"""catalog.footprint: an item's geometry is bounded in size and always covers the region."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import Point, Polygon, box
from shapely.ops import unary_union

from catalog.footprint import MAX_FOOTPRINT_VERTICES, footprint


def test_small_regions_are_their_own_footprint() -> None:
    region = box(13.0, 52.0, 13.1, 52.1)
    assert footprint(region) is region


def test_dense_outline_gets_a_bounded_footprint_that_covers_it() -> None:
    t = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    r = 0.02 * (1 + 0.05 * np.sin(40 * t))
    region = Polygon(np.column_stack([12.0 + 1.6 * r * np.cos(t), 52.4 + r * np.sin(t)]))
    result = footprint(region)
    assert shapely.get_num_coordinates(result) <= MAX_FOOTPRINT_VERTICES
    assert result.is_valid and result.covers(region)
    assert result.area < 1.05 * region.area


def test_many_islands_stay_covered() -> None:
    rng = np.random.default_rng(7)
    islands = [Point(13 + rng.random(), 52 + rng.random()).buffer(0.002, quad_segs=8) for _ in range(800)]
    region = unary_union(islands)
    assert shapely.get_num_coordinates(region) > MAX_FOOTPRINT_VERTICES
    result = footprint(region)
    assert shapely.get_num_coordinates(result) <= MAX_FOOTPRINT_VERTICES
    assert result.is_valid and result.covers(region)
