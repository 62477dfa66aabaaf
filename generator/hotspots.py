"""Hotspots: the connected areas where the change is at least a threshold, found block by block.

Fed the same (window, float32 values) blocks the pipeline streams to the COG writer, in any order.
Each block is labelled on its own (``scipy.ndimage.label``, 4-connectivity: pixels that share an edge;
a component is then always one polygon, never two squares touching at a corner). Labels that reach the
block's border are joined with the labels of neighbouring blocks by a union-find over the border pixels
of the two blocks, which gives exactly the components of labelling the whole raster at once (shown by
``tests/test_hotspots.py`` against ``scipy.ndimage.label`` of the whole array).

Per component it keeps the pixel count, the sum and maximum of the change, the sums of the pixel-centre
coordinates (the centroid of a union of equal squares is the mean of their centres) and the polygon
pieces of each block (``rasterio.features.shapes``), unioned with shapely at the end; pieces share exact
edges on block borders (the corners are integer multiples of the pixel size from the block origins).

Memory: the block at hand, plus what grows with the number of components and blocks: one summary and
the polygon pieces per component that reaches a block border (open) or is large enough to keep, and the
four border strips (one int64 per border pixel) of every block with a pixel at or above the threshold on
its border. Components inside one block that are smaller than the minimum area are dropped at once.
The pieces grow with the length of the hotspots' outlines, not their area: for sparse change they are
small, but a 16.8 Mpx raster whose changed third forms one maze held ~190 MB of pieces and took 11 s of
CPU to union (measured with 512 px blocks; ``shapely.coverage_union_all`` would be faster but needs
pieces noded alike on both sides of a block border, which ``shapes`` does not give).

So the pieces are kept as their outer rings (shapely polygons without holes) and their holes as bare
coordinate arrays. The holes of a piece lie inside its block, so no other piece touches them: the union of
a component is the union of its pieces' outer rings with every hole put back as a hole. Only the outer
rings go through shapely's overlay, which was what cost: on the benchmark mirror (benchmarks/bench_aef.py,
5.2 Mpx, one changed area with ~120,000 one-pixel holes of noise below the threshold), ``union_all`` of
the whole pieces took 12 s, and turning ``shapes``' GeoJSON into shapely polygons 2.6 s more (wall
times on the shared 2-core machine); now 0.2 s and 0.4 s (benchmarks/profile_product.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from generator.grid import Grid, to_crs

DEFAULT_COSINE_THRESHOLD = 0.2
"""Cosine change (1 − a·b) at or above which a pixel is part of a hotspot: the issue's default."""
DEFAULT_THRESHOLDS: dict[str, float] = {
    "cosine": DEFAULT_COSINE_THRESHOLD,
    # The same similarity (a·b = 0.8) as an angle: arccos(0.8) / π ≈ 0.2048.
    "angle": math.acos(1.0 - DEFAULT_COSINE_THRESHOLD) / math.pi,
    # Sentinel-2 RGB difference in reflectance: no similarity to match; 0.1 is a large change of colour.
    "s2-difference": 0.1,
}
DEFAULT_MIN_AREA_M2 = 5000.0
"""Smallest hotspot kept: 0.5 ha, 50 pixels of 10 m."""
CONNECTIVITY = 4
"""Pixels of a hotspot share an edge (4-connectivity), so every hotspot is one polygon."""
_STRUCTURE = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class HotspotParams:
    """What makes a pixel part of a hotspot and a hotspot worth keeping (recorded on the item)."""

    threshold: float
    min_area_m2: float = DEFAULT_MIN_AREA_M2


@dataclass(frozen=True)
class Hotspot:
    """One connected area, in the grid's CRS."""

    polygon: BaseGeometry
    pixels: int
    area_m2: float
    mean_change: float
    max_change: float
    centroid: tuple[float, float]  # x, y in the grid's CRS

    @property
    def score(self) -> float:
        """What ranks hotspots: area × mean change."""
        return self.area_m2 * self.mean_change


@dataclass
class _Component:
    pixels: int = 0
    total: float = 0.0
    peak: float = -math.inf
    sum_x: float = 0.0
    sum_y: float = 0.0
    pieces: list[BaseGeometry] = field(default_factory=list)  # outer rings, as polygons without holes
    holes: list[np.ndarray] = field(default_factory=list)  # (n, 2) closed rings of the pieces' holes

    def absorb(self, other: _Component) -> None:
        self.pixels += other.pixels
        self.total += other.total
        self.peak = max(self.peak, other.peak)
        self.sum_x += other.sum_x
        self.sum_y += other.sum_y
        self.pieces.extend(other.pieces)
        self.holes.extend(other.holes)


@dataclass(frozen=True)
class _Border:
    """A block's extent (rows r0..r1, cols c0..c1, end exclusive) and its edge labels (global ids, 0 off)."""

    r0: int
    r1: int
    c0: int
    c1: int
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


class HotspotAccumulator:
    """Collects the hotspots of a raster on ``grid`` from its blocks; ``result`` gives them ranked."""

    def __init__(self, grid: Grid, params: HotspotParams) -> None:
        self.grid, self.params = grid, params
        self.min_pixels = math.ceil(params.min_area_m2 / grid.pixel_area_m2 - 1e-9)
        self._next = 1
        self._parent: dict[int, int] = {}  # union-find over the ids of open components
        self._open: dict[int, _Component] = {}  # by root id
        self._closed: list[_Component] = []  # whole inside one block and large enough
        self._by_edge: dict[tuple[str, int], list[_Border]] = {}  # ("r1", 512) → blocks whose rows end at 512

    def update(self, window: Window, values: np.ndarray) -> None:
        """Add one block: ``values`` (rows, cols) float32 change at ``window`` of the grid, NaN = nodata."""
        values = np.asarray(values)
        with np.errstate(invalid="ignore"):
            mask = values >= self.params.threshold
        labels, n = ndimage.label(mask, structure=_STRUCTURE)
        if n == 0:
            return
        r0, c0 = int(window.row_off), int(window.col_off)
        idx = np.arange(1, n + 1)
        counts = ndimage.sum_labels(mask, labels, idx).astype(np.int64)
        totals = ndimage.sum_labels(values, labels, idx)
        peaks = ndimage.maximum(values, labels, idx)
        rows, cols = np.indices(labels.shape)
        t = self.grid.window_transform(window)
        xs = ndimage.sum_labels(t.c + (cols + 0.5) * t.a, labels, idx)
        ys = ndimage.sum_labels(t.f + (rows + 0.5) * t.e, labels, idx)
        on_border = np.zeros(n + 1, dtype=bool)
        for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            on_border[edge] = True
        on_border[0] = False
        keep = on_border[1:] | (counts >= self.min_pixels)
        if not keep.any():
            return
        kept = np.where(np.concatenate([[False], keep])[labels], labels, 0).astype(np.int32)
        pieces: dict[int, list[BaseGeometry]] = {}
        holes: dict[int, list[np.ndarray]] = {}
        for geom, value in shapes(kept, mask=kept > 0, connectivity=4, transform=t):
            outer, *inner = geom["coordinates"]
            pieces.setdefault(int(value), []).append(shapely.polygons(np.asarray(outer, dtype=np.float64)))
            holes.setdefault(int(value), []).extend(np.asarray(ring, dtype=np.float64) for ring in inner)
        base = self._next
        self._next += n
        for i in np.flatnonzero(keep):
            label = int(i) + 1
            comp = _Component(
                int(counts[i]),
                float(totals[i]),
                float(peaks[i]),
                float(xs[i]),
                float(ys[i]),
                pieces[label],
                holes.get(label, []),
            )
            if on_border[label]:
                gid = base + label - 1
                self._parent[gid] = gid
                self._open[gid] = comp
            else:
                self._closed.append(comp)
        # Global ids on the four border strips only: every label there is open (on_border), and the
        # block's inside is never looked at again (no full-block array, no sort of its labels).
        strips = [np.where(e > 0, e.astype(np.int64) + (base - 1), 0) for e in (labels[0], labels[-1])]
        strips += [np.where(e > 0, e.astype(np.int64) + (base - 1), 0) for e in (labels[:, 0], labels[:, -1])]
        border = _Border(r0, r0 + labels.shape[0], c0, c0 + labels.shape[1], *strips)
        for key in (("r1", border.r0), ("r0", border.r1), ("c1", border.c0), ("c0", border.c1)):
            for other in self._by_edge.get(key, []):
                self._join(border, other)
        if on_border.any():
            for key in (("r0", border.r0), ("r1", border.r1), ("c0", border.c0), ("c1", border.c1)):
                self._by_edge.setdefault(key, []).append(border)

    def _join(self, a: _Border, b: _Border) -> None:
        """Union the labels of pixels of ``a`` and ``b`` that share an edge across their common border."""
        for first, second in ((a, b), (b, a)):
            lo, hi = max(first.c0, second.c0), min(first.c1, second.c1)
            if first.r1 == second.r0 and lo < hi:  # ``second`` right below ``first``
                above = first.bottom[lo - first.c0 : hi - first.c0]
                self._union_all(above, second.top[lo - second.c0 : hi - second.c0])
            lo, hi = max(first.r0, second.r0), min(first.r1, second.r1)
            if first.c1 == second.c0 and lo < hi:  # ``second`` right of ``first``
                beside = first.right[lo - first.r0 : hi - first.r0]
                self._union_all(beside, second.left[lo - second.r0 : hi - second.r0])

    def _union_all(self, x: np.ndarray, y: np.ndarray) -> None:
        both = (x > 0) & (y > 0)
        if not both.any():
            return
        for p, q in np.unique(np.stack([x[both], y[both]], axis=1), axis=0):
            self._union(int(p), int(q))

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    def _union(self, p: int, q: int) -> None:
        rp, rq = self._find(p), self._find(q)
        if rp == rq:
            return
        if self._open[rp].pixels < self._open[rq].pixels:
            rp, rq = rq, rp
        self._parent[rq] = rp
        self._open[rp].absorb(self._open.pop(rq))

    def result(self) -> list[Hotspot]:
        """The hotspots of at least the minimum area, by decreasing area × mean change (rank 1 first)."""
        out = []
        for comp in [*self._closed, *self._open.values()]:
            if comp.pixels < self.min_pixels:
                continue
            polygon = with_holes(shapely.union_all(comp.pieces), comp.holes)
            out.append(
                Hotspot(
                    polygon=polygon,
                    pixels=comp.pixels,
                    area_m2=comp.pixels * self.grid.pixel_area_m2,
                    mean_change=comp.total / comp.pixels,
                    max_change=comp.peak,
                    centroid=(comp.sum_x / comp.pixels, comp.sum_y / comp.pixels),
                )
            )
        return sorted(out, key=lambda h: (-h.score, -h.pixels, h.centroid))


def with_holes(outline: BaseGeometry, holes: list[np.ndarray]) -> BaseGeometry:
    """``outline`` (a polygon or multipolygon) with the closed rings ``holes`` added as holes of the part
    that contains each. The holes must lie inside the outline and not overlap each other or its holes."""
    if not holes:
        return outline
    coords = np.concatenate(holes)
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(holes)), [len(h) for h in holes]))
    parts = shapely.get_parts(outline)
    if len(parts) == 1:
        owner = np.zeros(len(rings), dtype=np.int64)
    else:  # a point inside each hole lies inside exactly one part
        inside = shapely.point_on_surface(shapely.polygons(rings))
        hit_point, hit_part = shapely.STRtree(parts).query(inside, predicate="within")
        owner = np.full(len(rings), -1, dtype=np.int64)
        owner[hit_point] = hit_part
        if (owner < 0).any():
            raise ValueError("a hole lies outside every part of the outline")
    out = []
    for k, part in enumerate(parts):
        own = rings[owner == k]
        out.append(shapely.polygons(part.exterior, holes=[*part.interiors, *own]) if len(own) else part)
    return out[0] if len(out) == 1 else shapely.multipolygons(out)


def hotspot_rows(hotspots: list[Hotspot], grid: Grid) -> list[dict[str, object]]:
    """The table's rows: WGS84 polygon and centroid, rank (1 = largest area × mean change), figures."""
    rows = []
    for rank, h in enumerate(hotspots, start=1):
        lon_lat = to_crs(shapely.Point(h.centroid), grid.crs, "EPSG:4326")
        rows.append(
            {
                "geometry": to_crs(h.polygon, grid.crs, "EPSG:4326"),
                "rank": rank,
                "area_m2": h.area_m2,
                "mean_change": h.mean_change,
                "max_change": h.max_change,
                "centroid_lon": lon_lat.x,
                "centroid_lat": lon_lat.y,
            }
        )
    return rows
