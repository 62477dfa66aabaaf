"""An AEF-format mirror seen as an Earth Engine image collection: one image per file of the index.

Pixels are served the way Earth Engine holds the dataset: float unit vectors (the int8 values de-quantized
with ``(v / 127.5) ** 2 * sign(v)`` and renormalized), masked where the file has nodata (−128) or where a
vector has zero length. Written independently of ``generator.sources.aef`` so the two can check each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

WARP_TOLERANCE_PX = 1e-9
"""Earth Engine places each output pixel exactly; GDAL's default approximation (0.125 px) would not."""

INDEX_NAME = "aef_index.parquet"
NODATA = -128
BAND_NAMES = [f"A{i:02d}" for i in range(64)]


@dataclass(frozen=True)
class PixelGrid:
    """A request grid: CRS code, north-up affine transform and shape (what computePixels' ``grid`` holds)."""

    crs: str
    transform: Affine
    width: int
    height: int

    def rows(self, row: int, count: int) -> PixelGrid:
        """The sub-grid of ``count`` rows starting at ``row``."""
        return PixelGrid(self.crs, self.transform @ Affine.translation(0, row), self.width, count)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    def footprint_wgs84(self) -> BaseGeometry:
        poly = box(*self.bounds).segmentize(max(abs(self.transform.a), 1.0) * 64)
        if CRS.from_user_input(self.crs) == CRS.from_epsg(4326):
            return poly
        tr = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        return shapely.transform(poly, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


@dataclass
class MirrorImage:
    """One image of the collection: properties, footprint and the file holding its pixels."""

    path: Path
    crs: str
    footprint: BaseGeometry  # WGS84
    properties: dict = field(default_factory=dict)

    def read(self, grid: PixelGrid) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (64, h, w) float32 and their mask (h, w) bool on ``grid`` (nearest neighbour).

        Full resolution on every grid. Earth Engine reads a coarser grid from the pyramid level nearest its
        scale (means of 2×2 blocks, level by level: developers.google.com/earth-engine/guides/scale); not
        modelled: only the embedding pictures (one small request a year) ask for coarse grids, and here they
        get nearest samples of the full-resolution pixels, as the AEF source makes them."""
        with rasterio.open(self.path) as src:
            opts = {"crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height}
            with WarpedVRT(
                src,
                resampling=Resampling.nearest,
                src_nodata=NODATA,
                nodata=NODATA,
                tolerance=WARP_TOLERANCE_PX,
                **opts,
            ) as vrt:
                raw = vrt.read()
        v = raw.astype(np.float32)
        x = (v / np.float32(127.5)) ** 2 * np.sign(v)
        nodata = (raw == NODATA).all(axis=0)
        norm = np.sqrt(np.einsum("bij,bij->ij", x, x))
        valid = ~nodata & (norm > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(valid, x / norm, 0.0).astype(np.float32)
        return x, valid


def load_mirror(root: Path) -> list[MirrorImage]:
    """The images of a mirror, in index order, with the properties Earth Engine gives the dataset."""
    table = pq.read_table(Path(root) / INDEX_NAME).to_pylist()
    images = []
    for row in table:
        year = int(row["year"])
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else Path(root) / row["path"]
        start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000)
        end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000)
        images.append(
            MirrorImage(
                path=path,
                crs=row["crs"],
                footprint=shapely.from_wkb(row["geometry"]),
                properties={
                    "system:index": path.stem,
                    "system:time_start": start,
                    "system:time_end": end,
                    "UTM_ZONE": row["utm_zone"],
                },
            )
        )
    return images
