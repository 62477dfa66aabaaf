"""The STAC side of the year-of-largest-change product: its item (assets ``year`` and ``magnitude``, the
categorical quicklook and its legend), its collection (``<dataset collection>-timeline``), and its commit
into a catalog through the same staging, switch and merge as change products (``catalog.store``).

The ``year`` asset is categorical: the classification extension lists its classes (one per later year of a
consecutive pair, with the quicklook's colour as ``color_hint``, and the nodata class 0); raster fields
(``data_type``, ``nodata``, ``statistics``, ``raster:*``) sit on the single-band assets as STAC 1.1 wants.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac
from pystac.utils import datetime_to_str
from shapely.geometry import mapping

from catalog import layout
from catalog.assets import NODATA, PNG_MEDIA_TYPE, png_asset, raster_fields, statistics_fields
from catalog.build import (
    FILE_EXTENSION,
    PROCESSING_EXTENSION,
    PROJECTION_EXTENSION,
    RASTER_EXTENSION,
    SOFTWARE,
    THUMBNAIL_ASSET,
    build_collection,
    figure_properties,
    span,
    tile_title,
    to_json,
)
from catalog.datasets import dataset_info
from catalog.extension import CHANGE_EXTENSION
from catalog.files import (
    FileFacts,
    RasterFacts,
    file_facts,
    fsync_tree,
    raster_facts,
    switch_folder,
    write_json_atomic,
)
from catalog.footprint import footprint
from catalog.lock import write_lock
from catalog.provenance import COG_MEDIA_TYPE, ROOT_TITLE, collection_title, source_links
from catalog.render import RENDER_KEY
from catalog.testhook import hold
from generator.errors import OutputError
from generator.methods import METHODS
from generator.quicklook import OVERVIEW_NAME, category_palette, overview_path
from generator.timeline import TIMELINE_SUFFIX, YEAR_NODATA, TimelineProduct

if TYPE_CHECKING:
    from catalog.store import CatalogStore

CLASSIFICATION_EXTENSION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
"""Classification v2.0.0 (STAC 1.1): ``classification:classes`` on the categorical ``year`` asset."""

YEAR_ASSET = "year"
MAGNITUDE_ASSET = "magnitude"
LEGEND_ASSET = "legend"
OVERVIEW_ASSET = "overview"
MAGNITUDE_UNIT = "1"
"""UCUM's unit of a dimensionless quantity: the change measures (cosine, angle) have no unit. The ``year``
band has none either: its values are calendar years (categories), not durations."""

ITEM_EXTENSIONS = [
    CHANGE_EXTENSION,
    RASTER_EXTENSION,
    PROJECTION_EXTENSION,
    FILE_EXTENSION,
    PROCESSING_EXTENSION,
    CLASSIFICATION_EXTENSION,
]


def timeline_collection_id(dataset: str) -> str:
    """``google-satellite-embedding-v1-annual-timeline``: the dataset's change collection id + a suffix."""
    return f"{layout.collection_id(dataset)[:190]}-{TIMELINE_SUFFIX}"


def is_timeline_collection(collection: str) -> bool:
    return collection.endswith(f"-{TIMELINE_SUFFIX}")


@dataclass(frozen=True)
class TimelineFacts:
    """What is read from the product files before the item is built."""

    year: tuple[FileFacts, RasterFacts]
    magnitude: tuple[FileFacts, RasterFacts]
    thumbnail: FileFacts
    overview: FileFacts | None
    legend: FileFacts


def timeline_facts(product: TimelineProduct, folder: Path) -> TimelineFacts:
    """Size, checksum and grid of the product files, which must lie in ``folder``."""
    for path in product.files:
        if Path(path).resolve().parent != Path(folder).resolve():
            raise OutputError(
                f"product {product.job.item_id}: {path} must be written in the item folder {folder}"
            )
    overview = overview_path(product.thumbnail_path)
    return TimelineFacts(
        year=(file_facts(product.year_path), raster_facts(product.year_path)),
        magnitude=(file_facts(product.magnitude_path), raster_facts(product.magnitude_path)),
        thumbnail=file_facts(product.thumbnail_path),
        overview=file_facts(overview) if overview.is_file() else None,
        legend=file_facts(product.legend_path),
    )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "".join(f"{c:02X}" for c in rgb)


def year_classes(product: TimelineProduct) -> list[dict[str, Any]]:
    """``classification:classes`` of the ``year`` band: one class per later year of a pair (its pixel
    count and share of the valid pixels, its quicklook colour), then the nodata class."""
    pairs = product.job.pairs
    palette = category_palette([b for _, b in pairs])
    valid = sum(product.year_counts.values())
    classes: list[dict[str, Any]] = []
    for a, b in pairs:
        count = int(product.year_counts.get(b, 0))
        classes.append(
            {
                "value": b,
                "name": str(b),
                "title": f"{a}→{b}",
                "description": f"The largest change of the series is between {a} and {b}.",
                "color_hint": _hex(palette[b]),
                "count": count,
                "percentage": float(f"{100 * count / valid:.4g}") if valid else 0.0,
            }
        )
    classes.append(
        {
            "value": YEAR_NODATA,
            "name": "nodata",
            "description": "No pair of years has data at the pixel, or it lies outside the region.",
            "nodata": True,
        }
    )
    return classes


def year_asset(product: TimelineProduct, facts: TimelineFacts) -> pystac.Asset:
    file, r = facts.year
    job = product.job
    return pystac.Asset(
        href="./" + product.year_path.name,
        title="Year of largest change",
        description=(
            f"Per pixel, the later year of the consecutive pair among {', '.join(map(str, job.years))} with "
            f"the largest {job.method} change (on equal changes the earliest pair); pairs without data at "
            f"the pixel are skipped; {YEAR_NODATA} where no pair has data or outside the region."
        ),
        media_type=COG_MEDIA_TYPE,
        roles=["data"],
        extra_fields={
            "data_type": r.data_type,
            "nodata": YEAR_NODATA,
            "classification:classes": year_classes(product),
            **raster_fields(r, file),
        },
    )


def magnitude_asset(product: TimelineProduct, facts: TimelineFacts) -> pystac.Asset:
    file, r = facts.magnitude
    lo, hi = METHODS[product.job.method].value_range
    return pystac.Asset(
        href="./" + product.magnitude_path.name,
        title=f"Largest change ({product.job.method})",
        description=(
            f"The change of the pair the year asset names: {product.expression}, from {lo:g} (no change) "
            f"to {hi:g}; NaN where no pair has data or outside the region."
        ),
        media_type=COG_MEDIA_TYPE,
        roles=["data"],
        extra_fields={
            "data_type": r.data_type,
            "nodata": NODATA,
            "unit": MAGNITUDE_UNIT,
            **statistics_fields(product.stats, product),  # type: ignore[arg-type]
            **raster_fields(r, file),
        },
    )


def build_timeline_item(product: TimelineProduct, facts: TimelineFacts, collection: str) -> pystac.Item:
    """The STAC item of one timeline product."""
    job = product.job
    if not product.fingerprint:
        raise OutputError(f"product {job.item_id} has no fingerprint; pass TimelineJob.fingerprint(...)")
    start, end = span(job.from_year, job.to_year)
    outline = footprint(job.region.geometry)
    created = datetime_to_str(product.created.astimezone(UTC))
    properties: dict[str, Any] = {
        "title": (
            f"{job.region.title}{tile_title(job.tile)}: year of largest change "
            f"{job.from_year}–{job.to_year} ({job.method})"
        ),
        "description": (
            f"Per pixel, which consecutive pair of the years {', '.join(map(str, job.years))} of "
            f"{product.source.dataset} changed most in region '{job.region.id}' (method {job.method}), "
            "and that change."
        ),
        "change:region": job.region.id,
        **({"change:tile": job.tile} if job.tile is not None else {}),
        "change:from_year": job.from_year,
        "change:to_year": job.to_year,
        "change:years": list(job.years),
        "change:method": job.method,
        "change:dataset": product.source.dataset,
        **figure_properties(product),  # type: ignore[arg-type]
        "processing:software": {SOFTWARE: product.software_version},
        "processing:lineage": (
            f"The {job.method} change ({product.expression}) of each consecutive pair of the years "
            f"{', '.join(map(str, job.years))} of {product.source.dataset}, computed as for the change items "
            f"({product.source.kind} source) on the region's {job.grid.crs} grid; per pixel the pair with "
            "the largest change (the earliest on ties), pairs without data skipped."
        ),
        "processing:expression": {
            "format": "text/plain",
            "expression": f"argmax over consecutive pairs (a, b) of [{product.expression}]",
        },
        "processing:datetime": created,
        "created": created,
        "updated": created,
    }
    item = pystac.Item(
        id=job.item_id,
        geometry=json.loads(json.dumps(mapping(outline))),
        bbox=list(outline.bounds),
        datetime=end,
        start_datetime=start,
        end_datetime=end,
        properties=properties,
        stac_extensions=list(ITEM_EXTENSIONS),
        collection=collection,
    )
    item.add_asset(YEAR_ASSET, year_asset(product, facts))
    item.add_asset(MAGNITUDE_ASSET, magnitude_asset(product, facts))
    thumb = "./" + product.thumbnail_path.name
    item.add_asset(THUMBNAIL_ASSET, png_asset(thumb, "Year of largest change", "thumbnail", facts.thumbnail))
    if facts.overview is not None:
        overview = "./" + OVERVIEW_NAME
        title = "Year of largest change"
        item.add_asset(OVERVIEW_ASSET, png_asset(overview, title, "overview", facts.overview))
    legend = "./" + product.legend_path.name
    item.add_asset(LEGEND_ASSET, png_asset(legend, "Legend: colour of each year", "overview", facts.legend))
    info = dataset_info(product.source.dataset)
    json_type = layout.JSON_MEDIA_TYPE
    item.add_link(pystac.Link("root", layout.ITEM_TO_ROOT, media_type=json_type, title=ROOT_TITLE))
    for rel in ("parent", "collection"):
        item.add_link(
            pystac.Link(rel, layout.ITEM_TO_COLLECTION, media_type=json_type, title=_title(info.title))
        )
    for link in source_links(product):
        item.add_link(link)
    return item


def _title(dataset_title: str) -> str:
    return f"Year of largest change from {dataset_title}"


def build_timeline_collection(collection: str, items: list[pystac.Item]) -> pystac.Collection:
    """The timeline collection: as a change collection (extent, summaries, providers, links), with its own
    title, description and item asset definitions, and no change ``renders``."""
    coll = build_collection(collection, items)
    datasets = sorted({str(i.properties.get("change:dataset", "")) for i in items})
    info = dataset_info(datasets[0])
    coll.title = _title(info.title) if info.title else collection_title(info)
    coll.description = (
        f"Per pixel, the year of the largest change between consecutive years of {', '.join(datasets)} "
        "and that change, one item per region and method, as Cloud-Optimized GeoTIFFs with a categorical "
        "quicklook and its legend. " + (info.attribution or "")
    ).strip()
    renders = coll.extra_fields.get("renders")
    if isinstance(renders, dict):
        renders.pop(RENDER_KEY, None)
        if not renders:
            del coll.extra_fields["renders"]
            coll.stac_extensions = [e for e in coll.stac_extensions if "/render/" not in e]
    coll.stac_extensions = [*coll.stac_extensions, CLASSIFICATION_EXTENSION]
    years = sorted({y for i in items for y in i.properties.get("change:years", [])})
    coll.summaries.add("change:years", years)
    definitions = {
        YEAR_ASSET: (
            "Year of largest change",
            COG_MEDIA_TYPE,
            ["data"],
            {"data_type": "uint16", "nodata": YEAR_NODATA, "raster:sampling": "area"},
        ),
        MAGNITUDE_ASSET: (
            "Largest change",
            COG_MEDIA_TYPE,
            ["data"],
            {"data_type": "float32", "nodata": NODATA, "unit": MAGNITUDE_UNIT, "raster:sampling": "area"},
        ),
        THUMBNAIL_ASSET: ("Year of largest change", PNG_MEDIA_TYPE, ["thumbnail"], {}),
        OVERVIEW_ASSET: ("Year of largest change", PNG_MEDIA_TYPE, ["overview"], {}),
        LEGEND_ASSET: ("Legend: colour of each year", PNG_MEDIA_TYPE, ["overview"], {}),
    }
    coll.item_assets = {
        key: pystac.ItemAssetDefinition.create(
            title=title, description=None, media_type=media, roles=roles, extra_fields=extra
        )
        for key, (title, media, roles, extra) in definitions.items()
    }
    return coll


def commit_timeline(store: CatalogStore, product: TimelineProduct, staging: Path) -> TimelineProduct:
    """Make the product in ``staging`` (a folder in its collection folder) the catalog's, as
    ``CatalogStore.commit`` does for change products: item JSON written there, the folder switched in,
    collection and root merged under the write lock."""
    coll = timeline_collection_id(product.source.dataset)
    folder = layout.item_dir(store.root, coll, product.job.item_id)
    item = build_timeline_item(product, timeline_facts(product, staging), coll)
    write_json_atomic(staging / f"{item.id}.json", to_json(item))
    fsync_tree(staging)
    hold("item-written")
    with write_lock(store.root, store.note):
        store.check_owner()
        old = switch_folder(staging, folder)
        fsync_tree(folder.parent)
        hold("switched")
        store.write_collection(coll)
        store.write_root([coll])
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return replace(
        product,
        year_path=folder / product.year_path.name,
        magnitude_path=folder / product.magnitude_path.name,
        thumbnail_path=folder / product.thumbnail_path.name,
        legend_path=folder / product.legend_path.name,
    )


def timeline_required() -> Iterable[str]:
    """Assets a timeline item must have to be up to date."""
    return (YEAR_ASSET, MAGNITUDE_ASSET, THUMBNAIL_ASSET, LEGEND_ASSET)
