"""Products in, pystac objects out: pure functions (the facts read from files come in as arguments).

Conventions (STAC 1.1): an item spans 1 Jan of ``from_year`` to 31 Dec 23:59:59Z of ``to_year``; its
``datetime`` is the end of that span, the moment the change is known at. Products of the same end year
(cosine and angle, 2017→2024 and 2020→2024) share that datetime, so odc-stac's default ``groupby="time"``
would fuse them into one slice: load them with ``groupby="id"`` (one slice per item) or group on a
``change:`` property. Links and asset hrefs are relative (self-contained catalog); web pages are ``via``
links with their media type (``derived_from`` is for STAC objects); the standard layout is in
``catalog.layout``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pystac
from pystac.utils import datetime_to_str, str_to_datetime
from shapely.geometry import mapping

from catalog import layout
from catalog.assets import (
    NODATA,
    PNG_MEDIA_TYPE,
    change_asset,
    context_asset,
    embedding_asset,
    finite,
    png_asset,
)
from catalog.datasets import DATASETS, dataset_info
from catalog.extension import CHANGE_EXTENSION
from catalog.files import FileFacts, RasterFacts
from catalog.footprint import footprint
from catalog.geoparquet import ITEMS_ASSET, items_asset
from catalog.hotspots import HOTSPOTS_ASSET, hotspots_asset
from catalog.mosaic import mosaic_assets
from catalog.provenance import (
    COG_MEDIA_TYPE,
    HTML_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    ROOT_TITLE,
    collection_title,
    lineage,
    publications,
    source_links,
)
from catalog.render import change_renders
from generator.errors import OutputError
from generator.product import Product
from generator.quicklook import OVERVIEW_NAME

RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
RENDER_EXTENSION = "https://stac-extensions.github.io/render/v2.0.0/schema.json"
SCIENTIFIC_EXTENSION = "https://stac-extensions.github.io/scientific/v1.0.0/schema.json"

ITEM_EXTENSIONS = [
    CHANGE_EXTENSION,
    RASTER_EXTENSION,
    PROJECTION_EXTENSION,
    FILE_EXTENSION,
    PROCESSING_EXTENSION,
    RENDER_EXTENSION,
]
COLLECTION_EXTENSIONS = [CHANGE_EXTENSION, RASTER_EXTENSION, PROCESSING_EXTENSION, RENDER_EXTENSION]

CHANGE_ASSET = "change"
THUMBNAIL_ASSET = "thumbnail"
OVERVIEW_ASSET = "overview"
SOFTWARE = "changecat"
EXPRESSION_FORMAT = "text/plain"
"""processing:expression format: the method's formula as human-readable text (Product.expression)."""
KEYWORDS = ["change detection", "satellite embeddings", "embedding", "land cover change", "COG"]


@dataclass(frozen=True)
class ProductFacts:
    """What store reads from the product files before building the item."""

    cog: FileFacts
    thumbnail: FileFacts
    raster: RasterFacts
    context: dict[str, tuple[FileFacts, RasterFacts]] = field(default_factory=dict)  # by asset key
    overview: FileFacts | None = None  # the ≤ 1024 px quicklook beside the thumbnail, when there is one
    hotspots: FileFacts | None = None  # the hotspots GeoParquet table, when the product has one
    embedding: dict[str, FileFacts] = field(default_factory=dict)  # embedding pictures, by asset key


def span(from_year: int, to_year: int) -> tuple[datetime, datetime]:
    """1 Jan 00:00:00Z of the first year and 31 Dec 23:59:59Z of the second."""
    return datetime(from_year, 1, 1, tzinfo=UTC), datetime(to_year, 12, 31, 23, 59, 59, tzinfo=UTC)


def figure_properties(product: Product) -> dict[str, Any]:
    """The item properties a change or timeline product shares: its percentiles and changed areas, the
    fingerprint re-runs compare, the dataset release and the metered requests it took."""
    return {
        "change:percentiles": {k: finite(v, k, product) for k, v in product.stats.percentiles.items()},
        "change:changed_area": [
            {
                "threshold": float(a.threshold),
                "area_km2": finite(a.area_km2, "changed area", product),
                "fraction": finite(a.fraction, "changed fraction", product),
            }
            for a in product.stats.changed_area
        ],
        "change:fingerprint": product.fingerprint,
        **({"change:dataset_version": product.source.version} if product.source.version else {}),
        **({"change:requests": product.requests} if product.requests is not None else {}),
    }


def build_item(product: Product, facts: ProductFacts, collection: str) -> pystac.Item:
    """The STAC item of one product (assets ``change`` and ``thumbnail`` beside the item JSON)."""
    job = product.job
    if not product.fingerprint:
        raise OutputError(
            f"product {job.item_id} has no fingerprint; pass Job.fingerprint(...) to the Product"
        )
    start, end = span(job.from_year, job.to_year)
    covered = product.coverage.geometry if product.coverage is not None else job.region.geometry
    if covered.is_empty:
        covered = job.region.geometry
    outline = footprint(covered)  # bounded size; covers the part of the region the source covers
    geometry = json.loads(json.dumps(mapping(outline)))  # tuples → lists
    created = product.created.astimezone(UTC)
    info = dataset_info(product.source.dataset)
    properties: dict[str, Any] = {
        "title": (
            f"{job.region.title}{tile_title(job.tile)}: change {job.from_year}→{job.to_year} ({job.method})"
        ),
        "description": (
            f"Per-pixel change of {product.source.dataset} in {job.described} "
            f"between {job.from_year} and {job.to_year}, method {job.method}."
        ),
        "change:region": job.region.id,
        **({"change:tile": job.tile} if job.tile is not None else {}),
        "change:from_year": job.from_year,
        "change:to_year": job.to_year,
        "change:method": job.method,
        "change:dataset": product.source.dataset,
        **figure_properties(product),
        **_hotspot_properties(product),
        **({"change:coverage": _coverage(product)} if product.coverage is not None else {}),
        "processing:software": {SOFTWARE: product.software_version},
        "processing:lineage": lineage(product),
        "processing:expression": {"format": EXPRESSION_FORMAT, "expression": product.expression},
        "processing:datetime": datetime_to_str(created),
        "renders": change_renders(CHANGE_ASSET),
        "created": datetime_to_str(created),
        "updated": datetime_to_str(created),
    }
    extensions = list(ITEM_EXTENSIONS)  # the paper (sci:publications) is on the collection, said once
    item = pystac.Item(
        id=job.item_id,
        geometry=geometry,
        bbox=list(outline.bounds),
        datetime=end,
        start_datetime=start,
        end_datetime=end,
        properties=properties,
        stac_extensions=extensions,
        collection=collection,
    )
    item.add_asset(CHANGE_ASSET, change_asset(product, facts.cog, facts.raster))
    thumb = "./" + product.thumbnail_path.name
    item.add_asset(THUMBNAIL_ASSET, png_asset(thumb, "Thumbnail", "thumbnail", facts.thumbnail))
    if facts.overview is not None:
        overview = "./" + OVERVIEW_NAME
        item.add_asset(OVERVIEW_ASSET, png_asset(overview, "Quicklook", "overview", facts.overview))
    for key in sorted(product.context):
        item.add_asset(key, context_asset(product, key, facts.context[key]))
    for key in sorted(product.embedding):
        item.add_asset(key, embedding_asset(product, key, facts.embedding[key]))
    if product.hotspots is not None:
        if facts.hotspots is None:
            raise OutputError(f"product {job.item_id} has hotspot figures but no hotspots file")
        spots = product.hotspots
        item.add_asset(HOTSPOTS_ASSET, hotspots_asset(facts.hotspots, spots.count, spots.params.threshold))
    json_type, coll_title = layout.JSON_MEDIA_TYPE, collection_title(info)
    item.add_link(pystac.Link("root", layout.ITEM_TO_ROOT, media_type=json_type, title=ROOT_TITLE))
    for rel in ("parent", "collection"):
        item.add_link(pystac.Link(rel, layout.ITEM_TO_COLLECTION, media_type=json_type, title=coll_title))
    for link in source_links(product):
        item.add_link(link)
    return item


def tile_title(tile: str | None) -> str:
    return "" if tile is None else f", tile {tile}"


def _hotspot_properties(product: Product) -> dict[str, Any]:
    """``change:hotspot_*``: how many hotspots, their total area, and the parameters that made them."""
    spots = product.hotspots
    if spots is None:
        return {}
    return {
        "change:hotspot_count": spots.count,
        "change:hotspot_area": finite(spots.area_m2, "hotspot area", product),
        "change:hotspot_threshold": finite(spots.params.threshold, "hotspot threshold", product),
        "change:hotspot_min_area": finite(spots.params.min_area_m2, "hotspot minimum area", product),
    }


def _coverage(product: Product) -> float:
    """``change:coverage``: the fraction of the region the source covers in both years, 0..1."""
    fraction = finite(product.coverage.fraction, "coverage", product) if product.coverage else 1.0
    return min(1.0, max(0.0, round(fraction, 6)))


def _item_span(item: pystac.Item) -> tuple[datetime, datetime]:
    p = item.properties
    return str_to_datetime(p["start_datetime"]), str_to_datetime(p["end_datetime"])


def _item_assets(items: list[pystac.Item]) -> dict[str, pystac.ItemAssetDefinition]:
    resolutions = {
        a.extra_fields.get("raster:spatial_resolution") for i in items if (a := i.assets.get(CHANGE_ASSET))
    }
    change_fields: dict[str, Any] = {"data_type": "float32", "nodata": NODATA, "raster:sampling": "area"}
    if len(resolutions) == 1 and None not in resolutions:
        change_fields["raster:spatial_resolution"] = resolutions.pop()
    defs = {
        CHANGE_ASSET: pystac.ItemAssetDefinition.create(
            title="Change",
            description=None,
            media_type=COG_MEDIA_TYPE,
            roles=["data"],
            extra_fields=change_fields,
        ),
        THUMBNAIL_ASSET: pystac.ItemAssetDefinition.create(
            title="Thumbnail", description=None, media_type=PNG_MEDIA_TYPE, roles=["thumbnail"]
        ),
        OVERVIEW_ASSET: pystac.ItemAssetDefinition.create(
            title="Quicklook", description=None, media_type=PNG_MEDIA_TYPE, roles=["overview"]
        ),
    }
    if any(HOTSPOTS_ASSET in i.assets for i in items):
        defs[HOTSPOTS_ASSET] = pystac.ItemAssetDefinition.create(
            title="Change hotspots (GeoParquet)",
            description=None,
            media_type=PARQUET_MEDIA_TYPE,
            roles=["data"],
        )
    return defs


def build_collection(collection: str, items: list[pystac.Item]) -> pystac.Collection:
    """The collection of one dataset: extent, summaries and item_assets recomputed from all its items."""
    if not items:
        raise OutputError(f"collection {collection}: cannot build a collection without items")
    items = sorted(items, key=lambda i: i.id)
    datasets = sorted({str(i.properties.get("change:dataset", "")) for i in items})
    info = dataset_info(datasets[0])
    boxes = [i.bbox for i in items if i.bbox]
    bbox = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    spans = [_item_span(i) for i in items]
    extent = pystac.Extent(
        pystac.SpatialExtent([bbox]),
        pystac.TemporalExtent([[min(s for s, _ in spans), max(e for _, e in spans)]]),
    )
    summaries = pystac.Summaries(
        {
            key: sorted({i.properties[key] for i in items if key in i.properties})
            for key in (
                "change:region",
                "change:from_year",
                "change:to_year",
                "change:method",
                "change:dataset",
            )
        }
    )
    providers = [
        pystac.Provider(
            name=SOFTWARE,
            roles=[pystac.ProviderRole.PROCESSOR],
            description="Computes the change maps, statistics and quicklooks and writes this catalog.",
            extra_fields={
                "processing:lineage": "Per-pixel change between two years of unit-length embedding vectors."
            },
        )
    ]
    if info.producer:
        providers.insert(
            0,
            pystac.Provider(
                name=info.producer,
                roles=[pystac.ProviderRole.LICENSOR, pystac.ProviderRole.PRODUCER],
                url=info.page or None,
                description=info.attribution or None,
            ),
        )
    created = [str_to_datetime(c) for i in items if isinstance(c := i.properties.get("created"), str)]
    extra: dict[str, Any] = {"renders": change_renders(CHANGE_ASSET), **publications(info)}
    if created:
        extra.update({"created": datetime_to_str(min(created)), "updated": datetime_to_str(max(created))})
    extensions = list(COLLECTION_EXTENSIONS)
    if "sci:publications" in extra:
        extensions.append(SCIENTIFIC_EXTENSION)
    coll = pystac.Collection(
        id=collection,
        title=collection_title(info),
        description=(
            f"Per-pixel change between pairs of years of {', '.join(datasets)}, one item per region, "
            "year pair and method, as Cloud-Optimized GeoTIFFs with statistics and quicklooks. "
            + (info.attribution or "")
        ).strip(),
        extent=extent,
        license=info.license,
        keywords=[*KEYWORDS, *info.keywords],
        providers=providers,
        summaries=summaries,
        stac_extensions=extensions,
        extra_fields=extra,
    )
    coll.item_assets = _item_assets(items)
    showcase = _showcase(items)
    if showcase is not None:
        thumb = showcase.assets[THUMBNAIL_ASSET]
        coll.add_asset(
            THUMBNAIL_ASSET,
            pystac.Asset(
                href=f"./{showcase.id}/{thumb.href.removeprefix('./')}",
                title=f"Thumbnail: {showcase.properties.get('title', showcase.id)}",
                media_type=PNG_MEDIA_TYPE,
                roles=["thumbnail"],
            ),
        )
    coll.add_asset(ITEMS_ASSET, items_asset())  # written by the store just before this collection
    mosaics = mosaic_assets(items)  # the VRTs of tiled regions, written by the store likewise
    for key, asset in mosaics.items():
        coll.add_asset(key, asset)
    if mosaics:
        coll.stac_extensions.append(PROJECTION_EXTENSION)
    coll.remove_links("root")
    json_type = layout.JSON_MEDIA_TYPE
    for rel in ("root", "parent"):
        coll.add_link(pystac.Link(rel, layout.COLLECTION_TO_ROOT, media_type=json_type, title=ROOT_TITLE))
    if info.license_url:
        license_link = pystac.Link(
            "license", info.license_url, media_type=HTML_MEDIA_TYPE, title=info.license
        )
        coll.add_link(license_link)
    seen = set()
    for link in (link for i in items for link in i.links if link.rel == "via"):
        href = link.get_href(transform_href=False)
        if href not in seen:
            seen.add(href)
            coll.add_link(pystac.Link("via", href, media_type=link.media_type, title=link.title))
    for item in items:
        coll.add_link(
            pystac.Link(
                "item",
                layout.collection_to_item(item.id),
                media_type=layout.GEOJSON_MEDIA_TYPE,
                title=str(item.properties.get("title", item.id)),
            )
        )
    return coll


def _showcase(items: list[pystac.Item]) -> pystac.Item | None:
    """The item whose thumbnail stands for the collection: the latest change, then the largest region."""
    with_thumb = [i for i in items if THUMBNAIL_ASSET in i.assets]
    if not with_thumb:
        return None
    return max(with_thumb, key=lambda i: (_item_span(i)[1], _area(i), i.id))


def _area(item: pystac.Item) -> float:
    b = item.bbox or [0, 0, 0, 0]
    return (b[2] - b[0]) * (b[3] - b[1])


def build_catalog(catalog_id: str, title: str, description: str, collections: list[str]) -> pystac.Catalog:
    """The root catalog, linking each collection folder."""
    cat = pystac.Catalog(id=catalog_id, title=title, description=description)
    cat.remove_links("root")
    json_type = layout.JSON_MEDIA_TYPE
    cat.add_link(pystac.Link("root", "./" + layout.CATALOG_FILE, media_type=json_type, title=title))
    titles = {layout.collection_id(d): collection_title(info) for d, info in DATASETS.items()}
    for cid in sorted(set(collections)):
        link = layout.catalog_to_collection(cid)
        cat.add_link(pystac.Link("child", link, media_type=json_type, title=titles.get(cid, cid)))
    return cat


def to_json(obj: pystac.STACObject) -> dict[str, Any]:
    """The object's JSON with its hrefs exactly as built (relative), without a self link."""
    return obj.to_dict(include_self_link=False, transform_hrefs=False)
