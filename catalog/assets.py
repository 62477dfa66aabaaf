"""The assets of an item, built from a product and the facts read from its files (pure functions):
the change COG with its statistics, the PNG quicklooks, the Sentinel-2 context composites, the embedding
pictures."""

from __future__ import annotations

import math
from typing import Any

import pystac

from catalog.files import FileFacts, RasterFacts
from catalog.provenance import COG_MEDIA_TYPE
from generator.errors import OutputError
from generator.methods import METHODS
from generator.preview import ASSET_PREFIX as EMBEDDING_PREFIX
from generator.preview import PREVIEW_BANDS, STRETCH
from generator.product import CONTEXT_PREFIX, Product, Stats

PNG_MEDIA_TYPE = "image/png"
NODATA = "nan"
S2_RGB = (("B4", "red"), ("B3", "green"), ("B2", "blue"))

SIGNIFICANT_DIGITS = 7
"""Figures are recorded to 7 significant digits: the precision of the float32 change values."""

CATALOG_HISTOGRAM_BUCKETS = 64
"""Buckets of ``raster:histogram`` in the catalog: an exact regrouping of the computed 256, so the item
stays under 8 KB (each bucket is a line of the item's JSON)."""


def finite(value: float, what: str, product: Product) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise OutputError(f"product {product.job.item_id}: {what} is {value}, expected a finite number")
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def regroup(buckets: list[int], target: int = CATALOG_HISTOGRAM_BUCKETS) -> list[int]:
    """Sum neighbouring buckets down to ``target`` when it divides their number; else keep them."""
    if len(buckets) <= target or len(buckets) % target:
        return [int(b) for b in buckets]
    step = len(buckets) // target
    return [int(sum(buckets[i : i + step])) for i in range(0, len(buckets), step)]


def statistics_fields(s: Stats, product: Product) -> dict[str, Any]:
    """The raster extension's ``statistics`` and ``raster:histogram`` of a band with statistics ``s``."""
    buckets = regroup(s.histogram.buckets)
    return {
        "statistics": {
            "minimum": finite(s.minimum, "minimum", product),
            "maximum": finite(s.maximum, "maximum", product),
            "mean": finite(s.mean, "mean", product),
            "stddev": finite(s.stddev, "stddev", product),
            "count": int(s.count),
            "valid_percent": finite(s.valid_percent, "valid_percent", product),
        },
        "raster:histogram": {
            "count": len(buckets),
            "min": finite(s.histogram.minimum, "histogram minimum", product),
            "max": finite(s.histogram.maximum, "histogram maximum", product),
            "buckets": buckets,
        },
    }


def raster_fields(r: RasterFacts, file: FileFacts) -> dict[str, Any]:
    """A COG asset's sampling and resolution (raster), grid (projection) and size and checksum (file)."""
    return {
        "raster:sampling": "area",
        "raster:spatial_resolution": r.resolution,
        "proj:code": r.code,
        "proj:shape": list(r.shape),
        "proj:transform": list(r.transform),
        "file:size": file.size,
        "file:checksum": file.checksum,
    }


def change_asset(product: Product, cog: FileFacts, r: RasterFacts) -> pystac.Asset:
    job, method = product.job, METHODS[product.job.method]
    lo, hi = method.value_range
    return pystac.Asset(
        href="./" + product.cog_path.name,
        title=f"Change ({job.method})",
        description=(
            f"{method.title} between {job.from_year} and {job.to_year}: {product.expression}. "
            f"Values from {lo:g} (no change) to {hi:g}; NaN where a year has no data or outside the region."
        ),
        media_type=COG_MEDIA_TYPE,
        roles=["data"],
        extra_fields={
            "data_type": r.data_type,
            "nodata": NODATA,
            **statistics_fields(product.stats, product),
            **raster_fields(r, cog),
        },
    )


def png_asset(href: str, title: str, role: str, file: FileFacts) -> pystac.Asset:
    return pystac.Asset(
        href=href,
        title=title,
        media_type=PNG_MEDIA_TYPE,
        roles=[role],
        extra_fields={"file:size": file.size, "file:checksum": file.checksum},
    )


def context_asset(product: Product, key: str, facts: tuple[FileFacts, RasterFacts]) -> pystac.Asset:
    """A year's Sentinel-2 RGB composite, shown beside the change map as the blog did."""
    file, r = facts
    year = key.removeprefix(CONTEXT_PREFIX)
    return pystac.Asset(
        href="./" + product.context[key].name,
        title=f"Sentinel-2 median RGB {year} (cloud-masked)",
        description=(
            f"Median of the {year} Sentinel-2 L2A scenes (COPERNICUS/S2_SR_HARMONIZED) with the pixels "
            "Cloud Score+ grades clear (cs_cdf >= 0.6), bands B4, B3, B2 as DN (reflectance × 10000); "
            "0 = no clear observation."
        ),
        media_type=COG_MEDIA_TYPE,
        roles=["data", "reflectance"],  # DN numbers, not a display-ready image (STAC's "visual")
        extra_fields={
            "data_type": r.data_type,
            "nodata": 0,
            "bands": [{"name": b, "description": f"Sentinel-2 {b} ({c})"} for b, c in S2_RGB],
            "raster:spatial_resolution": r.resolution,
            "proj:code": r.code,
            "proj:shape": list(r.shape),
            "proj:transform": list(r.transform),
            "file:size": file.size,
            "file:checksum": file.checksum,
        },
    )


def embedding_asset(product: Product, key: str, file: FileFacts) -> pystac.Asset:
    """A year's embedding picture (``generator.preview``): before/after context from the embeddings
    themselves, with or without Sentinel-2."""
    if key not in product.embedding:
        raise OutputError(f"product {product.job.item_id} has no embedding picture '{key}'")
    year = key.removeprefix(EMBEDDING_PREFIX)
    red, green, blue = PREVIEW_BANDS
    lo, hi = STRETCH
    return pystac.Asset(
        href="./" + product.embedding[key].name,
        title=f"Embedding {year} ({red}, {green}, {blue} as RGB)",
        description=(
            f"Bands {red}, {green}, {blue} of the {year} embedding vectors (unit length) as red, green, "
            f"blue, stretched linearly from {lo:g}…{hi:g} to 0…255: pixels of similar colour have similar "
            "embeddings. Transparent where the year has no data or outside the region."
        ),
        media_type=PNG_MEDIA_TYPE,
        roles=["overview"],
        extra_fields={"file:size": file.size, "file:checksum": file.checksum},
    )
