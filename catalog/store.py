"""Read and update a static catalog on disk, atomically and incrementally.

Every JSON file is replaced atomically, and files are written bottom-up (items, then their collection,
then the root catalog), so a reader or a crash never sees a link to a file that does not exist yet. Items
already in the catalog are kept; an item with the id of a new product is replaced.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pystac

from catalog import layout
from catalog.build import ProductFacts, build_catalog, build_collection, build_item, to_json
from catalog.files import file_facts, raster_facts, read_json, write_json_atomic
from catalog.geoparquet import refresh_items_file
from catalog.walk import iter_all_items, iter_items, link_targets
from generator.errors import OutputError
from generator.product import Product
from generator.quicklook import overview_path


def load_fingerprints(root: Path) -> dict[str, str]:
    """``change:fingerprint`` of every item linked from the catalog at ``root`` (empty if none yet)."""
    out = {}
    for _, item in iter_all_items(Path(root)):
        fingerprint = item.get("properties", {}).get("change:fingerprint")
        if isinstance(fingerprint, str) and "id" in item:
            out[item["id"]] = fingerprint
    return out


def product_facts(product: Product, folder: Path) -> ProductFacts:
    """Size, checksum and grid of the product files, which must lie in the item's folder."""
    files = [(product.cog_path, "change COG"), (product.thumbnail_path, "thumbnail")]
    files += [(path, f"context asset {key}") for key, path in product.context.items()]
    for path, what in files:
        if Path(path).resolve().parent != folder:
            raise OutputError(
                f"product {product.job.item_id}: the {what} {path} must be written in the item folder "
                f"{folder}"
            )
    return ProductFacts(
        cog=file_facts(product.cog_path),
        thumbnail=file_facts(product.thumbnail_path),
        raster=raster_facts(product.cog_path),
        context={key: (file_facts(p), raster_facts(p)) for key, p in product.context.items()},
        overview=file_facts(o) if (o := overview_path(product.thumbnail_path)).is_file() else None,
    )


def _existing_items(root: Path, collection: str) -> dict[str, pystac.Item]:
    path = layout.collection_json(root, collection)
    if not path.is_file():
        return {}
    items = {}
    for _, data in iter_items(path, read_json(path)):
        item = pystac.Item.from_dict(data, migrate=False)
        items[item.id] = item
    return items


def _existing_collections(root: Path) -> list[str]:
    """Ids (folder names) of the collections the current root catalog links to."""
    path = root / layout.CATALOG_FILE
    if not path.is_file():
        return []
    return [p.parent.name for p in link_targets(read_json(path), "child", path) if p.is_file()]


class CatalogStore:
    """The catalog at ``root`` during one run: each ``add`` writes a product's item, then its collection,
    then the root catalog. The items of a collection are read from disk once and kept, so a run of N
    products costs N collection rebuilds in memory rather than N² item reads."""

    def __init__(self, root: Path, *, catalog_id: str, title: str, description: str) -> None:
        self.root = Path(root).resolve()
        self.catalog_id, self.title, self.description = catalog_id, title, description
        self._items: dict[str, dict[str, pystac.Item]] = {}

    def add(self, products: list[Product]) -> None:
        """Create or update one item per product (its files already in its item folder)."""
        self.root.mkdir(parents=True, exist_ok=True)
        by_collection: dict[str, list[Product]] = defaultdict(list)
        for product in products:
            by_collection[layout.collection_id(product.source.dataset)].append(product)
        for coll, prods in by_collection.items():
            if coll not in self._items:
                self._items[coll] = _existing_items(self.root, coll)
            items = self._items[coll]
            for product in prods:
                folder = layout.item_dir(self.root, coll, product.job.item_id)
                item = build_item(product, product_facts(product, folder), coll)
                write_json_atomic(folder / f"{item.id}.json", to_json(item))
                items[item.id] = item
            refresh_items_file(self.root, coll, items.values())  # stac-geoparquet, before its collection
            collection = build_collection(coll, list(items.values()))
            write_json_atomic(layout.collection_json(self.root, coll), to_json(collection))
        collections = [*_existing_collections(self.root), *by_collection]
        catalog = build_catalog(self.catalog_id, self.title, self.description, collections)
        write_json_atomic(self.root / layout.CATALOG_FILE, to_json(catalog))


def save_catalog(
    root: Path, *, catalog_id: str, title: str, description: str, products: list[Product]
) -> None:
    """Create or update the catalog at ``root`` with one item per product.

    Each product's COG and thumbnail must already be in ``item_dir(root, collection, item_id)``.
    """
    CatalogStore(root, catalog_id=catalog_id, title=title, description=description).add(products)
