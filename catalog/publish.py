"""Publish a local catalog to object storage (s3://, gs://, az://) or a folder, as a "relative published"
STAC catalog: the root and the collections carry an absolute ``self`` link (stac-check and STAC Browser
want one on catalogs and collections), every other href stays relative.

Order: assets (COGs, PNGs, stac-geoparquet files, our extension schema) first, then items, collections and
the root last, so a reader never follows a link to an object that is not there yet. An object already
there with the same size and sha2-256 (kept in the object's metadata, or hashed for a local folder) is
skipped. Nothing is ever deleted. Credentials and endpoints come from the store library's environment
(``AWS_*`` incl. ``AWS_ENDPOINT_URL``, ``GOOGLE_*``, ``AZURE_*``) and are never printed.

Our ``change`` extension is identified by a URL nothing serves (``CHANGE_EXTENSION``); the published
objects point to the copy of its schema published with the catalog (``<base>/schemas/change/…``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from catalog import layout
from catalog.assets import PNG_MEDIA_TYPE
from catalog.extension import CHANGE_EXTENSION, own_schemas
from catalog.files import SHA256_MULTIHASH_PREFIX, read_json, sha256_multihash
from catalog.geoparquet import ITEMS_FILE, items_table
from catalog.mosaic import MOSAIC_SUFFIX, VRT_MEDIA_TYPE
from catalog.provenance import COG_MEDIA_TYPE, PARQUET_MEDIA_TYPE
from catalog.walk import is_local_relative, iter_collections, iter_items
from generator.errors import PublishError
from generator.fsmode import make_public
from generator.urls import public_href, redact

SCHEMA_KEY = "schemas/change/v1.0.0/schema.json"
"""Where the change extension's schema is published, relative to the catalog root."""

JSON_CACHE_CONTROL = "public, max-age=60"
"""Catalog, collection and item JSON and the items files change with every run: recheck within a minute."""
DATA_CACHE_CONTROL = "public, max-age=3600"
"""COGs and quicklooks are replaced in place only when a product is remade: an hour."""
SCHEMA_CACHE_CONTROL = "public, max-age=86400"
"""The schema's path is versioned: a day."""

CHECKSUM_ATTRIBUTE = "changecat-sha256"
"""Object metadata holding the multihash sha2-256 of what publish wrote (x-amz-meta-… on S3)."""

OBJECT_SCHEMES = ("s3", "gs", "az", "abfs", "abfss", "azure")

Data = bytes | Path


@dataclass(frozen=True)
class Upload:
    """One object to write: key relative to the destination, its content, and its HTTP headers."""

    key: str
    data: Data = field(repr=False)
    content_type: str
    cache_control: str
    kind: str  # "asset" | "item" | "collection" | "root": the upload order

    def size_and_checksum(self) -> tuple[int, str]:
        if isinstance(self.data, Path):
            return self.data.stat().st_size, sha256_multihash(self.data)
        return len(self.data), SHA256_MULTIHASH_PREFIX + hashlib.sha256(self.data).hexdigest()


@dataclass
class PublishResult:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


ORDER = ("asset", "item", "collection", "root")


def check_base_url(base_url: str) -> str:
    """The base URL with a trailing slash; it must be an http(s) URL without credentials or query."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PublishError(f"--base-url {base_url!r}: expected the http(s) URL the catalog will be read from")
    if public_href(base_url) != base_url.split("#")[0].split("?")[0] or parts.query or parts.fragment:
        raise PublishError("--base-url: no user:password, query string or fragment in a public URL")
    return base_url if base_url.endswith("/") else base_url + "/"


def _dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def published_json(doc: dict[str, Any], schema_url: str, self_href: str | None = None) -> dict[str, Any]:
    """A catalog object as published: our extension points to its published schema; with ``self_href``
    an absolute ``self`` link comes first."""
    doc = json.loads(json.dumps(doc))
    if "stac_extensions" in doc:
        doc["stac_extensions"] = [schema_url if e == CHANGE_EXTENSION else e for e in doc["stac_extensions"]]
    links = [lk for lk in doc.get("links", []) if lk.get("rel") != "self"]
    if self_href is not None:
        links.insert(0, {"rel": "self", "href": self_href, "type": layout.JSON_MEDIA_TYPE})
    doc["links"] = links
    return doc


def published_schema(schema_url: str) -> bytes:
    """Our extension schema with its ``$id`` and required extension URL set to where it is published."""
    text = own_schemas()[CHANGE_EXTENSION].read_text(encoding="utf-8")
    return text.replace(CHANGE_EXTENSION, schema_url).encode()


def _media_type(path: str) -> str:
    for suffix, media in ((".tif", COG_MEDIA_TYPE), (".tiff", COG_MEDIA_TYPE), (".png", PNG_MEDIA_TYPE)):
        if path.lower().endswith(suffix):
            return media
    if path.endswith(".parquet"):
        return PARQUET_MEDIA_TYPE
    if path.endswith(MOSAIC_SUFFIX):
        return VRT_MEDIA_TYPE
    if path.endswith(".json"):
        return layout.JSON_MEDIA_TYPE
    return "application/octet-stream"


def _asset_files(doc: dict[str, Any], doc_path: Path, root: Path) -> Iterator[Path]:
    for key, asset in (doc.get("assets") or {}).items():
        href = asset.get("href", "")
        if not is_local_relative(href) or href.endswith(ITEMS_FILE):
            continue  # external URL, or an items file (rewritten with absolute hrefs below)
        path = (doc_path.parent / href).resolve()
        if root not in path.parents or not path.is_file():
            raise PublishError(f"{doc_path}: asset {key!r} href {href} is not a file inside the catalog")
        yield path


def _parquet_bytes(items: list[dict[str, Any]], base: str) -> bytes:
    from stac_geoparquet.arrow import to_parquet

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ITEMS_FILE
        to_parquet(items_table(items, base), path)
        return path.read_bytes()


def plan(catalog_dir: Path, base_url: str) -> list[Upload]:
    """Every object of the published catalog, in upload order (nothing is read from the destination)."""
    root = Path(catalog_dir).resolve()
    base = check_base_url(base_url)
    schema_url = urljoin(base, SCHEMA_KEY)
    catalog_path = root / layout.CATALOG_FILE
    if not catalog_path.is_file():
        raise PublishError(f"{catalog_dir}: no {layout.CATALOG_FILE} here; run `changecat run` first")
    uploads: dict[str, Upload] = {}

    def add(path: Path, data: Data, kind: str, content_type: str | None = None, cache: str = "") -> None:
        key = path.relative_to(root).as_posix()
        media = content_type or _media_type(key)
        uploads.setdefault(key, Upload(key, data, media, cache or _cache(media), kind))

    uploads[SCHEMA_KEY] = Upload(
        SCHEMA_KEY, published_schema(schema_url), layout.JSON_MEDIA_TYPE, SCHEMA_CACHE_CONTROL, "asset"
    )
    for coll_path, coll in iter_collections(root):
        items = []
        for item_path, item in iter_items(coll_path, coll):
            for file in _asset_files(item, item_path, root):
                add(file, file, "asset")
            items.append(item)
            doc = published_json(item, schema_url)
            add(item_path, _dumps(doc), "item", layout.GEOJSON_MEDIA_TYPE, JSON_CACHE_CONTROL)
        for file in _asset_files(coll, coll_path, root):
            add(file, file, "asset")
        coll_url = urljoin(base, coll_path.parent.relative_to(root).as_posix() + "/")
        published_items = [published_json(i, schema_url) for i in items]
        add(coll_path.parent / ITEMS_FILE, _parquet_bytes(published_items, coll_url), "asset")
        coll_doc = published_json(coll, schema_url, self_href=urljoin(coll_url, coll_path.name))
        add(coll_path, _dumps(coll_doc), "collection", cache=JSON_CACHE_CONTROL)
    catalog = published_json(
        read_json(catalog_path), schema_url, self_href=urljoin(base, layout.CATALOG_FILE)
    )
    add(catalog_path, _dumps(catalog), "root", cache=JSON_CACHE_CONTROL)
    return sorted(uploads.values(), key=lambda u: ORDER.index(u.kind))


def _cache(media: str) -> str:
    return JSON_CACHE_CONTROL if media in (layout.JSON_MEDIA_TYPE, PARQUET_MEDIA_TYPE) else DATA_CACHE_CONTROL


class Destination:
    """Where objects go; ``existing`` gives (size, checksum) of what is there, or None."""

    def existing(self, key: str) -> tuple[int, str | None] | None:
        raise NotImplementedError

    def put(self, upload: Upload, checksum: str) -> None:
        raise NotImplementedError


class FolderDestination(Destination):
    """A local folder (e.g. one a web server serves): files replaced atomically, modes per the umask."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()

    def _path(self, key: str) -> Path:
        return self.folder / key

    def existing(self, key: str) -> tuple[int, str | None] | None:
        path = self._path(key)
        return (path.stat().st_size, sha256_multihash(path)) if path.is_file() else None

    def put(self, upload: Upload, checksum: str) -> None:
        path = self._path(upload.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                data = upload.data
                if isinstance(data, Path):
                    with open(data, "rb") as src:
                        while chunk := src.read(1 << 20):
                            f.write(chunk)
                else:
                    f.write(data)
            make_public(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class ObjectDestination(Destination):
    """An object store through obstore (maintained Rust object_store bindings)."""

    def __init__(self, url: str) -> None:
        import obstore
        from obstore.store import from_url

        self._obstore = obstore
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        options = {"allow_http": True} if endpoint.startswith("http://") else None
        try:
            self.store = from_url(url, client_options=options)
        except Exception as exc:  # obstore raises its own error types for bad URLs and config
            raise PublishError(f"{public_href(url)}: cannot open it ({redact(str(exc))})") from exc

    def existing(self, key: str) -> tuple[int, str | None] | None:
        from obstore.exceptions import NotFoundError

        try:
            result = self._obstore.get(self.store, key, options={"head": True})
        except (NotFoundError, FileNotFoundError):
            return None
        return result.meta["size"], result.attributes.get(CHECKSUM_ATTRIBUTE)

    def put(self, upload: Upload, checksum: str) -> None:
        attributes = {
            "Content-Type": upload.content_type,
            "Cache-Control": upload.cache_control,
            CHECKSUM_ATTRIBUTE: checksum,
        }
        self._obstore.put(self.store, upload.key, upload.data, attributes=attributes)


def open_destination(dest: str) -> Destination:
    scheme = urlsplit(dest).scheme
    if scheme in OBJECT_SCHEMES:
        return ObjectDestination(dest)
    if scheme in ("", "file") or len(scheme) == 1:  # a path (a Windows drive letter is not a scheme)
        return FolderDestination(Path(dest.removeprefix("file://")))
    raise PublishError(
        f"destination {public_href(dest)!r}: expected s3://bucket/prefix, gs://…, az://… or a local folder"
    )


def publish(
    catalog_dir: Path,
    dest: str,
    base_url: str,
    *,
    dry_run: bool = False,
    on_upload: Callable[[Upload, bool], None] | None = None,
) -> PublishResult:
    """Upload what differs from the destination, in order; ``on_upload(upload, skipped)`` per object."""
    uploads = plan(catalog_dir, base_url)
    destination = open_destination(dest)
    if isinstance(destination, FolderDestination):
        src = Path(catalog_dir).resolve()
        if destination.folder == src or src in destination.folder.parents:
            raise PublishError(f"destination {dest}: publish to a folder outside the catalog {catalog_dir}")
    result = PublishResult()
    for upload in uploads:
        size, checksum = upload.size_and_checksum()
        try:
            same = destination.existing(upload.key) == (size, checksum)
            if not same and not dry_run:
                destination.put(upload, checksum)
        except PublishError:
            raise
        except Exception as exc:  # the store library's errors (network, permissions) end the run
            raise PublishError(f"{upload.key}: the store refused it ({redact(str(exc))})") from exc
        (result.skipped if same else result.uploaded).append(upload.key)
        if on_upload:
            on_upload(upload, same)
    return result
