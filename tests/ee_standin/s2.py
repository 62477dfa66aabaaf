"""A synthetic ``COPERNICUS/S2_SR_HARMONIZED`` collection over a mirror's bounds, for the stand-in and tests.

Built deterministically from the bounds and years: per year ``ACCEPTED`` images with CLOUDY_PIXEL_PERCENTAGE
under 20 and one cloudier image (``REJECTED``, 60 %) that the usual ``Filter.lt("CLOUDY_PIXEL_PERCENTAGE",
20)`` removes. Bands B2, B3, B4, QA60 (uint16) on a 10 m grid in the UTM zone of the bounds' centre; QA60 is
constant on 60 m cells, as the 60 m band looks on a 10 m grid. Pixel values are integer functions of the
pixel's row and column, so any request grid is rendered by nearest neighbour without files.

Cloud zones (QA60 bit 10 opaque, bit 11 cirrus) mask an even number of the accepted images, so the count of
clear observations is odd (5, 3 or 1) wherever there is one: the median is then one of the values, with no
dependence on how Earth Engine breaks even counts. ``ZONE_ALL`` clouds all images of the first year only
(no clear observation). ``ZONE_OTHER_BITS`` sets QA60 bits that are not clouds. ``ZONE_SHADOW`` holds cloud
shadows in two images: dark pixels that QA60 does not flag and Cloud Score+ does. Clouded observations are
bright (≥ 9000 DN) and shadows dark, so one that slips through the mask changes the median. Inside
``ZONE_CHANGE`` every year after the first has a changed surface (``CHANGE_DN`` per band).

As in Earth Engine, QA60 is masked (empty) in scenes sensed from ``QA60_EMPTY_FROM`` to ``QA60_EMPTY_UNTIL``:
the COPERNICUS/S2_HARMONIZED catalog page says QA60 "contained rasterized cloud mask polygons until Feb 2022,
when these polygons stopped being produced. Starting in February 2024, legacy-consistent QA60 bands are
constructed from the MSK_CLASSI cloud classification bands" (the S2_SR_HARMONIZED band table gives the
masked dates). A Cloud Score+ collection (``GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED``, bands ``cs`` and
``cs_cdf``, 0 = occluded .. 1 = clear) has one image per scene with the scene's ``system:index``, "such that
Cloud Score+ bands can be linked to source images based on their shared system:index" (its catalog page).
Its ``cs_cdf`` is below 0.6 exactly where a pixel is clouded or shadowed, and at or above it elsewhere
(including the hazy scene, which no mask flags).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from generator.grid import to_crs, utm_crs_for
from tests.ee_standin.mirror import PixelGrid
from tests.ee_standin.values import Image, ImageElement, Rendered

S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
CLOUD_SCORE_COLLECTION = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
BANDS = ("B2", "B3", "B4", "QA60")
CLOUD_SCORE_BANDS = ("cs", "cs_cdf")
QA60_EMPTY_FROM = datetime(2022, 1, 25, tzinfo=UTC)
QA60_EMPTY_UNTIL = datetime(2024, 2, 28, 23, 59, 59, tzinfo=UTC)
"""Scenes sensed in this span have QA60 fully masked in Earth Engine (processing baseline 04.00+ without
the cloud polygons QA60 was rasterized from)."""
CLEAR_CDF = 0.6
"""cs_cdf of the synthetic scores: below this where clouded or shadowed, at or above it elsewhere."""
RGB = ("B4", "B3", "B2")
RESOLUTION_M = 10.0
QA_CELL = 6  # QA60 is a 60 m band: 6 × 6 pixels of 10 m
CLOUD_BIT, CIRRUS_BIT = 10, 11
ACCEPTED = 5
REJECTED_PERCENT = 60.0
BASE_DN = {"B2": 300, "B3": 500, "B4": 700}
CHANGE_DN = {"B4": 1200, "B3": 700, "B2": -250}
CLOUD_DN = 9000
SHADOW_DN = 40
# Zones as (row0, row1, col0, col1) fractions of the grid; masks per accepted image index: QA60 value.
ZONE_TWO = (0.10, 0.30, 0.10, 0.30)
ZONE_FOUR = (0.10, 0.30, 0.40, 0.60)
ZONE_ALL = (0.10, 0.30, 0.70, 0.90)
ZONE_OTHER_BITS = (0.40, 0.50, 0.40, 0.90)
ZONE_CHANGE = (0.55, 0.80, 0.10, 0.35)
ZONE_SHADOW = (0.55, 0.80, 0.50, 0.90)
SHADOWED = (1, 3)
"""Accepted images with a cloud shadow in ZONE_SHADOW (two: the clear count stays odd)."""
CLOUD, CIRRUS = 1 << CLOUD_BIT, 1 << CIRRUS_BIT
ZONE_QA = {
    ZONE_TWO: {0: CLOUD, 1: CIRRUS},
    ZONE_FOUR: {0: CLOUD, 1: CIRRUS, 2: CLOUD | CIRRUS, 3: CLOUD},
    ZONE_OTHER_BITS: {0: 1 << 9, 1: (1 << 1) | (1 << 12)},
}


@dataclass(frozen=True)
class S2Spec:
    """The synthetic collection: a 10 m UTM grid (origin on the 60 m lattice) and the years served."""

    crs: str
    transform: Affine
    width: int
    height: int
    years: tuple[int, ...]

    @classmethod
    def over(cls, bounds_wgs84: tuple[float, float, float, float], years: tuple[int, ...]) -> S2Spec:
        crs = utm_crs_for((bounds_wgs84[0] + bounds_wgs84[2]) / 2, (bounds_wgs84[1] + bounds_wgs84[3]) / 2)
        west, south, east, north = to_crs(box(*bounds_wgs84).segmentize(0.005), "EPSG:4326", crs).bounds
        cell = RESOLUTION_M * QA_CELL
        x0, y0 = np.floor(west / cell) * cell, np.ceil(north / cell) * cell
        width = int(np.ceil((east - x0) / cell)) * QA_CELL
        height = int(np.ceil((y0 - south) / cell)) * QA_CELL
        transform = Affine(RESOLUTION_M, 0, float(x0), 0, -RESOLUTION_M, float(y0))
        return cls(crs, transform, width, height, tuple(sorted(years)))

    def footprint(self) -> BaseGeometry:
        t = self.transform
        utm = box(t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f).segmentize(200)
        return to_crs(utm, self.crs, "EPSG:4326")

    def zone(self, z: tuple[float, float, float, float], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pixels (row, col of this grid) inside a zone; zones are whole 60 m cells."""
        cr, cc = rows // QA_CELL, cols // QA_CELL
        nr, nc = self.height // QA_CELL, self.width // QA_CELL
        r0, r1, c0, c1 = int(z[0] * nr), int(z[1] * nr), int(z[2] * nc), int(z[3] * nc)
        return (cr >= r0) & (cr < r1) & (cc >= c0) & (cc < c1)

    def qa60(self, year: int, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The cloud flags of image ``k`` (what QA60 holds where it is not masked)."""
        qa = np.zeros(rows.shape, dtype=np.int64)
        for z, per_image in ZONE_QA.items():
            if k in per_image:
                qa[self.zone(z, rows, cols)] = per_image[k]
        if year == self.years[0] and k < ACCEPTED:
            qa[self.zone(ZONE_ALL, rows, cols)] = CLOUD if k % 2 else CIRRUS
        return qa

    def shadow(self, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.zone(ZONE_SHADOW, rows, cols) if k in SHADOWED else np.zeros(rows.shape, dtype=bool)

    def cs_cdf(self, year: int, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cloud Score+ ``cs_cdf`` of image ``k``: 0.25..0.54 where clouded or shadowed, 0.60..0.89 elsewhere
        (exactly CLEAR_CDF on some clear pixels, which ``gte`` keeps)."""
        occluded = ((self.qa60(year, k, rows, cols) & (CLOUD | CIRRUS)) != 0) | self.shadow(k, rows, cols)
        step = ((rows * 3 + cols + k) % 30) / 100
        return np.where(occluded, 0.25 + step, CLEAR_CDF + step)

    def qa60_masked(self, year: int, k: int) -> bool:
        """Whether Earth Engine serves image ``k``'s QA60 band fully masked (sensed in the QA60 gap)."""
        start = datetime.fromtimestamp(self.properties(year, k)["system:time_start"] / 1000, tz=UTC)
        return QA60_EMPTY_FROM <= start <= QA60_EMPTY_UNTIL

    def surface(self, year: int, band: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The clear-sky DN of a year (before per-image noise)."""
        b = BANDS.index(band)
        dn = BASE_DN[band] + (rows * 7 + cols * 13 + b * 101) % 600 + 5 * self.years.index(year)
        if year != self.years[0]:
            dn = dn + np.where(self.zone(ZONE_CHANGE, rows, cols), CHANGE_DN[band], 0)
        return dn

    def observation(self, year: int, k: int, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Image ``k`` of ``year`` (k = ACCEPTED is the rejected, cloudier image): DN per band, int64."""
        qa = self.qa60(year, k, rows, cols)
        cloudy = (qa & (CLOUD | CIRRUS)) != 0
        out = {"QA60": qa}
        for b, band in enumerate(BANDS[:3]):
            noise = (k * 53 + rows * 11 + cols * 17 + b * 5) % 41 - 20
            dn = self.surface(year, band, rows, cols) + noise
            if k == ACCEPTED:
                dn = dn + 4000  # a hazy scene: wrong for a composite, but not flagged in QA60
            dn = np.where(self.shadow(k, rows, cols), SHADOW_DN + (rows + cols + b) % 20, dn)
            out[band] = np.where(cloudy, CLOUD_DN + (rows + cols + k) % 500, dn)
        return out

    def properties(self, year: int, k: int) -> dict:
        start = datetime(year, 1, 1, 10, 30, tzinfo=UTC) + timedelta(days=30 + 60 * k)
        percent = REJECTED_PERCENT if k == ACCEPTED else float(2 + 4 * k)
        return {
            "system:index": f"{start:%Y%m%dT%H%M%S}_SYNTHETIC_{k}",
            "system:time_start": int(start.timestamp() * 1000),
            "CLOUDY_PIXEL_PERCENTAGE": percent,
        }

    def pixels(self, g: PixelGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of this grid nearest to each pixel centre of ``g`` (nearest neighbour), and
        whether the pixel falls inside the grid."""
        jj, ii = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
        t = g.transform
        xs, ys = t.a * jj + t.b * ii + t.c, t.d * jj + t.e * ii + t.f
        if g.crs != self.crs:
            xs, ys = _transformer(g.crs, self.crs).transform(xs, ys)
        s = self.transform  # north-up
        cols, rows = np.floor((xs - s.c) / s.a).astype(np.int64), np.floor((ys - s.f) / s.e).astype(np.int64)
        inside = (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)
        return np.clip(rows, 0, self.height - 1), np.clip(cols, 0, self.width - 1), inside

    def image(self, year: int, k: int) -> Image:
        qa_masked = self.qa60_masked(year, k)

        def render(g: PixelGrid) -> Rendered:
            rows, cols, inside = self.pixels(g)
            obs = self.observation(year, k, rows, cols)
            data = np.stack([obs[b] for b in BANDS]).astype(np.float64)
            mask = np.broadcast_to(inside, data.shape).copy()
            if qa_masked:
                mask[BANDS.index("QA60")] = False
            return data, mask

        return Image(BANDS, "uint16", render)

    def score_image(self, year: int, k: int) -> Image:
        """The scene's Cloud Score+ image (float bands cs, cs_cdf; here cs = cs_cdf)."""

        def render(g: PixelGrid) -> Rendered:
            rows, cols, inside = self.pixels(g)
            cdf = self.cs_cdf(year, k, rows, cols)
            data = np.stack([cdf, cdf])
            return data, np.broadcast_to(inside, data.shape).copy()

        return Image(CLOUD_SCORE_BANDS, "float", render)

    def collection(self) -> tuple[ImageElement, ...]:
        footprint = self.footprint()
        return tuple(
            ImageElement(self.image(y, k), self.properties(y, k), footprint)
            for y in self.years
            for k in range(ACCEPTED + 1)
        )

    def score_collection(self) -> tuple[ImageElement, ...]:
        """Cloud Score+: one image per scene, with the scene's system:index and time."""
        footprint = self.footprint()
        keep = ("system:index", "system:time_start")
        return tuple(
            ImageElement(self.score_image(y, k), {p: self.properties(y, k)[p] for p in keep}, footprint)
            for y in self.years
            for k in range(ACCEPTED + 1)
        )


_transformers: dict[tuple[str, str], Transformer] = {}


def _transformer(src: str, dst: str) -> Transformer:
    if (src, dst) not in _transformers:
        _transformers[(src, dst)] = Transformer.from_crs(src, dst, always_xy=True)
    return _transformers[(src, dst)]
