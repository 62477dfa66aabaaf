"""Where a product comes from, as the catalog records it: source links, the paper, the lineage text.

Web pages and source files are ``via`` links with their media type: ``derived_from`` (processing
extension) is for STAC objects, which the sources are not. Local paths are never named.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import pystac

from catalog.datasets import DatasetInfo, dataset_info
from generator.methods import METHODS
from generator.product import Product
from generator.urls import public_href

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
HTML_MEDIA_TYPE = "text/html"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
ROOT_TITLE = "Root catalog"
"""Title of the links to the root (items and collections do not know the catalog's own title)."""


def media_type(href: str) -> str | None:
    """The media type of a source link, from its extension (None when unknown)."""
    path = href.lower()
    if path.endswith(".parquet"):
        return PARQUET_MEDIA_TYPE
    if path.endswith((".tif", ".tiff")):
        return COG_MEDIA_TYPE
    return None


def source_links(product: Product) -> list[pystac.Link]:
    """``via`` links to what the product was made from: the source's files (not STAC objects, so not
    ``derived_from``) and the dataset's web page (``text/html``)."""
    info = dataset_info(product.source.dataset)
    links = [
        pystac.Link(
            "via", public_href(h), media_type=media_type(public_href(h)), title=f"Source data: {info.title}"
        )
        for h in dict.fromkeys(product.source.derived_from)
    ]
    if info.page:
        links.append(dataset_page_link(info))
    return links


def dataset_page_link(info: DatasetInfo) -> pystac.Link:
    return pystac.Link("via", info.page, media_type=HTML_MEDIA_TYPE, title=f"Dataset page: {info.title}")


def collection_title(info: DatasetInfo) -> str:
    return f"Change maps from {info.title}"


def publications(info: DatasetInfo) -> dict[str, Any]:
    """The dataset's paper as ``sci:publications`` (it is not the DOI of our product: no ``sci:doi``)."""
    if not info.doi:
        return {}
    return {"sci:publications": [{"doi": info.doi, "citation": info.citation or ""}]}


def lineage(product: Product) -> str:
    """processing:lineage: what was read, from where (no local path), how it was compared."""
    job, source = product.job, product.source
    method = METHODS[job.method]
    inputs = f"The {method.inputs} of {job.from_year} and {job.to_year} of {source.dataset}"
    if source.kind == "earthengine":
        where = (
            f"computed in Google Earth Engine from its {source.dataset} image collection; only the "
            "single-band change was downloaded"
        )
    elif PurePath(source.location).is_absolute():  # a local folder tells readers elsewhere nothing
        where = f"read from a local copy of the dataset's COG files ({source.kind} source)"
    else:
        where = f"read from the dataset's COG files at {public_href(source.location)} ({source.kind} source)"
    return (
        f"{inputs}, {where}, compared per pixel ({job.method}: {product.expression}) on the region's "
        f"{job.grid.crs} grid; pixels outside the region or without data are NaN."
    )
