"""Read and update a static catalog on disk, atomically, incrementally, and shared by concurrent runs.

A product is committed in one step: its files and item JSON are written in a staging folder beside the
item folder, which is then switched into place (``files.switch_folder``), so a reader or a crash sees the
old product whole or the new one whole. Collections and the root catalog are then merged under the
catalog's write lock from what is on disk (items any process made, item folders a crash left unlinked),
never from one run's memory, so concurrent runs lose nothing. Every JSON file is replaced atomically.

The root catalog keeps the links and fields changecat does not manage (hand edits), and a root catalog
changecat did not write is refused unless adopted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pystac

from catalog import layout
from catalog.agree import disagreement
from catalog.build import SOFTWARE, ProductFacts, build_catalog, build_collection, build_item, to_json
from catalog.files import file_facts, fsync_tree, raster_facts, read_json, switch_folder, write_json_atomic
from catalog.geoparquet import refresh_items_file
from catalog.integrity import item_folder_names
from catalog.lock import write_lock
from catalog.mosaic import mosaics_missing, refresh_mosaics
from catalog.testhook import hold
from catalog.timeline import build_timeline_collection, is_timeline_collection
from catalog.walk import iter_all_items, link_targets
from generator.errors import ForeignCatalogError, OutputError
from generator.product import Product
from generator.quicklook import overview_path

OWNER_FIELD = "changecat:version"
"""Field changecat puts on the root catalogs it writes, to recognise them (and refuse others)."""
MANAGED_ROOT_FIELDS = ("type", "stac_version", "id", "title", "description")
"""Root catalog fields the config sets; every other field of an existing root is kept."""


def load_fingerprints(root: Path) -> dict[str, str]:
    """``change:fingerprint`` of every item linked from the catalog at ``root`` (empty if none yet)."""
    out = {}
    for _, item in iter_all_items(Path(root)):
        fingerprint = item.get("properties", {}).get("change:fingerprint")
        if isinstance(fingerprint, str) and "id" in item:
            out[item["id"]] = fingerprint
    return out


def product_facts(product: Product, folder: Path) -> ProductFacts:
    """Size, checksum and grid of the product files, which must lie in ``folder``."""
    files = [(product.cog_path, "change COG"), (product.thumbnail_path, "thumbnail")]
    files += [(path, f"context asset {key}") for key, path in product.context.items()]
    files += [(product.hotspots_path, "hotspots table")] if product.hotspots_path is not None else []
    files += [(path, f"embedding picture {key}") for key, path in product.embedding.items()]
    for path, what in files:
        if Path(path).resolve().parent != Path(folder).resolve():
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
        hotspots=file_facts(product.hotspots_path) if product.hotspots_path is not None else None,
        embedding={key: file_facts(p) for key, p in product.embedding.items()},
    )


def is_ours(catalog: dict[str, Any], path: Path) -> bool:
    """Whether changecat wrote this root catalog: it carries ``OWNER_FIELD``, or (catalogs written before
    that field) it links at least one collection and every collection it links names changecat as its
    processor."""
    if OWNER_FIELD in catalog:
        return True
    children = link_targets(catalog, "child", path)
    if not children:
        return False
    for child in children:
        try:
            providers = read_json(child).get("providers")
        except OutputError:
            return False
        names = (
            [p.get("name") for p in providers if isinstance(p, dict)] if isinstance(providers, list) else []
        )
        if SOFTWARE not in names:
            return False
    return True


def _foreign(path: Path, why: str) -> ForeignCatalogError:
    return ForeignCatalogError(
        f"{path}: {why}; changecat refuses to take it over and left it untouched. Choose another "
        "catalog.output, or pass --adopt to add changecat's collections to it (its own links and fields "
        "are kept)"
    )


def _collection_of(href_target: Path, root: Path) -> str | None:
    """The collection id of a child link target in changecat's layout (``<root>/<id>/collection.json``)."""
    if href_target.name == layout.COLLECTION_FILE and href_target.parent.parent == root:
        return href_target.parent.name
    return None


class CatalogStore:
    """The catalog at ``root`` as one process updates it. Items read from disk are cached by file identity
    (mtime, size), so a run of N products does not re-parse N items per product."""

    def __init__(
        self,
        root: Path,
        *,
        catalog_id: str,
        title: str,
        description: str,
        adopt: bool = False,
        note: Callable[[str], None] | None = None,
        software_version: str = "",
    ) -> None:
        self.root = Path(root).resolve()
        self.catalog_id, self.title, self.description = catalog_id, title, description
        self.adopt = adopt
        self.note = note or (lambda message: None)
        self.software_version = software_version or _own_version()
        self._cache: dict[Path, tuple[tuple[int, int], pystac.Item]] = {}

    # --- ownership and writability --------------------------------------------------------------------

    def check_owner(self) -> None:
        """Raise ``ForeignCatalogError`` if ``root`` holds a root catalog changecat did not write."""
        path = self.root / layout.CATALOG_FILE
        if self.adopt or not path.is_file():
            return
        try:
            doc = read_json(path)
        except OutputError as exc:
            raise _foreign(path, f"cannot be read as a catalog ({exc})") from None
        if not is_ours(doc, path):
            raise _foreign(path, "is a catalog changecat did not write")

    def writable(self) -> bool:
        try:
            self.check_writable()
        except OutputError:
            return False
        return True

    def check_writable(self) -> None:
        """Raise ``OutputError`` (once, before any work) if the catalog folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".changecat-probe-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(
                f"catalog folder {self.root} is not writable ({exc.strerror or exc}); products cannot be "
                "saved there: make it writable or set catalog.output to another folder"
            ) from None

    # --- reading --------------------------------------------------------------------------------------

    def _item(self, path: Path) -> pystac.Item | None:
        """The item at ``path`` (cached while the file is unchanged); None if missing or unreadable."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            item = pystac.Item.from_dict(read_json(path), migrate=False)
        except (OutputError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.note(f"skipping {path}: not a readable STAC item ({exc}); a run of its config remakes it")
            return None
        self._cache[path] = (key, item)
        return item

    def _linked_ids(self, coll: str) -> set[str] | None:
        """Item ids the collection.json on disk links; None when it is unreadable (rebuilt then)."""
        path = layout.collection_json(self.root, coll)
        if not path.is_file():
            return set()
        try:
            doc = read_json(path)
        except OutputError as exc:
            self.note(f"{exc}: rebuilding it from its item folders")
            return None
        return {p.parent.name for p in link_targets(doc, "item", path) if p.parent.parent == path.parent}

    def _orphans(self, coll: str, linked: set[str]) -> set[str]:
        """Whole items of changecat in the collection folder that no link reaches (a crash between the
        item and its collection); they are linked again."""
        folder = self.root / coll
        if not folder.is_dir():
            return set()
        out = set()
        for name in item_folder_names(folder):
            if name in linked:
                continue
            item = self._item(folder / name / f"{name}.json")
            if item is None or "change:fingerprint" not in item.properties or item.id != name:
                continue
            if disagreement(folder / name, item.to_dict(transform_hrefs=False), checksums=False) is None:
                out.add(name)
        return out

    def needs_update(self, linked: dict[str, Iterable[str]]) -> bool:
        """Whether the collections must be written to link these existing items, or the root catalog to
        follow the config (title, description, children)."""
        for coll, ids in linked.items():
            on_disk = self._linked_ids(coll)
            if on_disk is None or not set(ids) <= on_disk or mosaics_missing(self.root / coll):
                return True
        return not _same_root(self._root_doc(list(linked)), self._existing_root())

    # --- writing --------------------------------------------------------------------------------------

    def commit(self, product: Product, staging: Path) -> Product:
        """Make the product in ``staging`` (a folder in its collection folder holding its files) the
        catalog's: item JSON written there, the folder switched in, collection and root merged."""
        coll = layout.collection_id(product.source.dataset)
        folder = layout.item_dir(self.root, coll, product.job.item_id)
        item = build_item(product, product_facts(product, staging), coll)
        write_json_atomic(staging / f"{item.id}.json", to_json(item))
        fsync_tree(staging)
        hold("item-written")
        with write_lock(self.root, self.note):
            self.check_owner()
            old = switch_folder(staging, folder)
            fsync_tree(folder.parent)
            hold("switched")
            self.write_collection(coll)
            hold("collection-written")
            self.write_root([coll])
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        moved = {key: folder / p.name for key, p in product.context.items()}
        return replace(
            product,
            cog_path=folder / product.cog_path.name,
            thumbnail_path=folder / product.thumbnail_path.name,
            context=moved,
            hotspots_path=None if product.hotspots_path is None else folder / product.hotspots_path.name,
            embedding={key: folder / p.name for key, p in product.embedding.items()},
        )

    def add(self, products: list[Product]) -> None:
        """Create or update one item per product whose files are already in its item folder."""
        self.check_owner()
        self.root.mkdir(parents=True, exist_ok=True)
        by_collection: dict[str, list[Product]] = defaultdict(list)
        for product in products:
            by_collection[layout.collection_id(product.source.dataset)].append(product)
        items = []  # every item built before any is written: a bad product leaves nothing behind
        for coll, prods in by_collection.items():
            for product in prods:
                folder = layout.item_dir(self.root, coll, product.job.item_id)
                items.append((folder, build_item(product, product_facts(product, folder), coll)))
        for folder, item in items:
            write_json_atomic(folder / f"{item.id}.json", to_json(item))
        self.link(list(by_collection))

    def link(self, collections: list[str]) -> None:
        """Merge these collections and the root catalog from disk, under the write lock."""
        with write_lock(self.root, self.note):
            self.check_owner()
            for coll in collections:
                self.write_collection(coll)
            self.write_root(collections)

    def write_collection(self, coll: str, drop: Iterable[str] = ()) -> bool:
        """Rewrite the collection from its items on disk (call under the write lock); False if it has no
        item left (its collection.json is then removed)."""
        linked = self._linked_ids(coll)
        folder = self.root / coll
        names = set(item_folder_names(folder)) if folder.is_dir() else set()
        ids = (names if linked is None else linked | self._orphans(coll, linked)) - set(drop)
        items = [
            item
            for i in sorted(ids)
            if (item := self._item(layout.item_json(self.root, coll, i))) is not None and item.id == i
        ]
        path = layout.collection_json(self.root, coll)
        refresh_mosaics(self.root, coll, items)  # VRTs of tiled regions, in agreement with their tiles
        if not items:
            path.unlink(missing_ok=True)
            return False
        refresh_items_file(self.root, coll, items)  # stac-geoparquet, before the collection that links it
        build = build_timeline_collection if is_timeline_collection(coll) else build_collection
        write_json_atomic(path, to_json(build(coll, items)))
        return True

    def _existing_root(self) -> dict[str, Any] | None:
        path = self.root / layout.CATALOG_FILE
        if not path.is_file():
            return None
        try:
            return read_json(path)
        except OutputError:
            if self.adopt:
                return None
            raise

    def _root_doc(self, collections: list[str], drop: Iterable[str] = ()) -> dict[str, Any]:
        """The root catalog to write: the existing one with its managed parts updated."""
        existing = self._existing_root()
        path = self.root / layout.CATALOG_FILE
        children = set(collections)
        if existing is None:  # none yet, or an unreadable one being replaced: rebuilt from the folders
            children |= self._own_collections()
        extra: list[dict[str, Any]] = []
        for link in (existing or {}).get("links") or []:
            if not isinstance(link, dict) or link.get("rel") in ("root", "self"):
                continue
            href = link.get("href")
            if link.get("rel") == "child" and isinstance(href, str):
                target = (path.parent / href).resolve()
                coll = _collection_of(target, self.root)
                if coll is not None:
                    if target.is_file():
                        children.add(coll)
                    continue
            extra.append(link)
        children -= set(drop)
        built = to_json(build_catalog(self.catalog_id, self.title, self.description, sorted(children)))
        doc = {key: built[key] for key in MANAGED_ROOT_FIELDS if key in built}
        doc.update({k: v for k, v in (existing or built).items() if k not in MANAGED_ROOT_FIELDS})
        root_links = [link for link in built["links"] if link.get("rel") == "root"]
        child_links = [link for link in built["links"] if link.get("rel") == "child"]
        doc["links"] = [*root_links, *extra, *child_links]
        doc[OWNER_FIELD] = self.software_version
        return doc

    def _own_collections(self) -> set[str]:
        """Collection folders under the root whose collection.json changecat wrote."""
        out = set()
        for path in self.root.glob(f"*/{layout.COLLECTION_FILE}"):
            try:
                providers = read_json(path).get("providers")
            except OutputError:
                continue
            if isinstance(providers, list) and any(
                isinstance(p, dict) and p.get("name") == SOFTWARE for p in providers
            ):
                out.add(path.parent.name)
        return out

    def write_root(self, collections: list[str], drop: Iterable[str] = ()) -> None:
        doc = self._root_doc(collections, drop)
        if not _same_root(doc, self._existing_root()):
            write_json_atomic(self.root / layout.CATALOG_FILE, doc)


def _same_root(new: dict[str, Any], existing: dict[str, Any] | None) -> bool:
    """Equal but for the owner mark: a catalog written before the mark existed is not rewritten just to add
    it (a run with nothing to do must work on a read-only catalog)."""
    if existing is None:
        return False
    strip = OWNER_FIELD
    return {k: v for k, v in new.items() if k != strip} == {k: v for k, v in existing.items() if k != strip}


def _own_version() -> str:
    from changecat import __version__

    return __version__


def save_catalog(
    root: Path, *, catalog_id: str, title: str, description: str, products: list[Product]
) -> None:
    """Create or update the catalog at ``root`` with one item per product.

    Each product's COG and thumbnail must already be in ``item_dir(root, collection, item_id)``.
    """
    CatalogStore(root, catalog_id=catalog_id, title=title, description=description).add(products)
