"""Real products for the catalog tests: a small COG (rio-cogeo) and PNG written where the generator puts
them, and the Product dataclass filled from the array's own statistics."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles
from shapely.geometry import box

from catalog.layout import collection_id, item_dir
from generator.grid import grid_for
from generator.methods import METHODS
from generator.plan import Job, Region
from generator.product import PERCENTILES, THRESHOLDS, ChangedArea, Histogram, Product, Stats
from generator.sources.base import AEF_DATASET, SourceInfo

HISTOGRAM_BUCKETS = 20
SOURCE = SourceInfo(
    kind="aef",
    dataset=AEF_DATASET,
    location="https://reader:secret@mirror.example.org/aef?token=abc",
    derived_from=["https://mirror.example.org/aef/aef_index.parquet?X-Amz-Signature=deadbeef#frag"],
)


def change_values(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Change values in [0, 0.8) with a NaN corner (nodata), float32."""
    rng = np.random.default_rng(seed)
    values = (rng.random(shape) * 0.8).astype(np.float32)
    values[: shape[0] // 4, : shape[1] // 4] = np.nan
    return values


def write_cog(path: Path, values: np.ndarray, crs: str, transform) -> None:
    """A real COG through rio-cogeo, as the generator writes it (float32, nodata NaN, deflate)."""
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "height": values.shape[0],
        "width": values.shape[1],
        "crs": crs,
        "transform": transform,
        "nodata": float("nan"),
    }
    cog = cog_profiles.get("deflate")
    cog.update(blockxsize=64, blockysize=64)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(values, 1)
        with mem.open() as src:
            cog_translate(src, str(path), cog, in_memory=True, quiet=True)


def stats_of(values: np.ndarray, method: str, pixel_area_m2: float) -> Stats:
    valid = values[np.isfinite(values)].astype(np.float64)
    lo, hi = METHODS[method].value_range
    buckets, _ = np.histogram(valid, bins=HISTOGRAM_BUCKETS, range=(lo, hi))
    areas = []
    for t in THRESHOLDS:
        n = int((valid > t).sum())
        areas.append(ChangedArea(t, n * pixel_area_m2 / 1e6, n / valid.size))
    return Stats(
        minimum=float(valid.min()),
        maximum=float(valid.max()),
        mean=float(valid.mean()),
        stddev=float(valid.std()),
        count=int(valid.size),
        valid_percent=100.0 * valid.size / values.size,
        histogram=Histogram(lo, hi, [int(b) for b in buckets]),
        percentiles={f"p{p}": float(np.percentile(valid, p)) for p in PERCENTILES},
        changed_area=areas,
    )


def make_product(
    root: Path,
    region_id: str = "town",
    years: tuple[int, int] = (2017, 2024),
    method: str = "cosine",
    bounds: tuple[float, float, float, float] = (13.40, 52.50, 13.41, 52.505),
    seed: int = 0,
    source: SourceInfo = SOURCE,
) -> Product:
    """A finished product in its item folder under catalog ``root`` (≈ 70 × 60 px at 10 m)."""
    region = Region(region_id, region_id.title(), box(*bounds))
    grid = grid_for(region.geometry)
    job = Job(region, years[0], years[1], method, grid)
    folder = item_dir(root, collection_id(source.dataset), job.item_id)
    folder.mkdir(parents=True, exist_ok=True)
    values = change_values((grid.height, grid.width), seed)
    cog_path, thumb_path = folder / "change.tif", folder / "thumbnail.png"
    write_cog(cog_path, values, grid.crs, grid.transform)
    Image.fromarray(np.nan_to_num(values * 255).astype(np.uint8)).save(thumb_path)
    return Product(
        job=job,
        source=source,
        cog_path=cog_path,
        thumbnail_path=thumb_path,
        stats=stats_of(values, method, grid.pixel_area_m2),
        expression=METHODS[method].expression,
        software_version="0.1.0",
        created=datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC),
        fingerprint=job.fingerprint(f"{source.kind}:{source.dataset}:{source.location}", f"0.1.0+{seed}"),
    )


def read_cog(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def with_fingerprint(product: Product, fingerprint: str) -> Product:
    return replace(product, fingerprint=fingerprint)
