"""An item's footprint: the region's geometry, simplified to a bounded size that still covers the region.

STAC readers use an item's geometry to find and draw it; a coastline with a million vertices made a 68 MB
item. The exact region stays where it matters (the pixels outside it are nodata in the COG and the
fingerprint holds it); the item gets a footprint of at most ``MAX_FOOTPRINT_VERTICES`` vertices that
contains every point of the region, so a search by area never misses it.
"""

from __future__ import annotations

import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

MAX_FOOTPRINT_VERTICES = 1000
"""Vertices of an item's geometry at most: about 40 KB of JSON, plenty to draw a region on a map."""
FIRST_TOLERANCE = 1e-4
"""The first simplification tried, as a fraction of the region's larger side (doubled until it fits)."""
MAX_ATTEMPTS = 24
"""Doublings tried before falling back to the bounding box (2^24 × 1e-4 is far beyond any side)."""


def footprint(region: BaseGeometry) -> BaseGeometry:
    """``region`` itself when small enough, else a valid (Multi)Polygon with at most
    ``MAX_FOOTPRINT_VERTICES`` vertices that contains it (the bounding box as a last resort)."""
    if shapely.get_num_coordinates(region) <= MAX_FOOTPRINT_VERTICES:
        return region
    west, south, east, north = region.bounds
    tolerance = FIRST_TOLERANCE * max(east - west, north - south)
    for _ in range(MAX_ATTEMPTS):
        # Grown by the tolerance first, so simplifying (which moves edges by at most the tolerance, never
        # breaking the topology) cannot cut into the region.
        candidate = region.buffer(tolerance, quad_segs=2).simplify(tolerance, preserve_topology=True)
        if (
            shapely.get_num_coordinates(candidate) <= MAX_FOOTPRINT_VERTICES
            and candidate.is_valid
            and candidate.covers(region)
        ):
            return candidate
        tolerance *= 2
    return box(west, south, east, north)
