"""Where things live in a static catalog: ``<root>/catalog.json → <collection>/collection.json →
<collection>/<item-id>/<item-id>.json`` with the item's assets beside its JSON. Ids are checked to be safe
path components so nothing is ever written outside the catalog root."""

from __future__ import annotations

import re
from pathlib import Path

from generator.errors import OutputError

CATALOG_FILE = "catalog.json"
COLLECTION_FILE = "collection.json"
JSON_MEDIA_TYPE = "application/json"
GEOJSON_MEDIA_TYPE = "application/geo+json"

SAFE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,199}$")
"""Ids usable as one path component on every OS: lowercase ASCII, digits, ``_ . -``; 1-200 characters."""

# Relative hrefs between the levels of the standard layout.
ITEM_TO_ROOT = "../../" + CATALOG_FILE
ITEM_TO_COLLECTION = "../" + COLLECTION_FILE
COLLECTION_TO_ROOT = "../" + CATALOG_FILE


def collection_id(dataset: str) -> str:
    """A path-safe collection id for a dataset: "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL" →
    "google-satellite-embedding-v1-annual"."""
    cid = re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-")
    if not cid:
        raise OutputError(
            f"dataset id {dataset!r} gives an empty collection id; it needs at least one letter or digit"
        )
    return cid[:200]


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise ``OutputError``."""
    if not SAFE_ID_PATTERN.match(value) or ".." in value:
        raise OutputError(
            f"{what} {value!r} is not usable as a folder name: use 1-200 lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit, without '..'"
        )
    return value


def item_dir(root: Path, collection: str, item_id: str) -> Path:
    """``<root>/<collection>/<item-id>/``, after checking both ids are path-safe and the result is inside."""
    check_id(collection, "collection id")
    check_id(item_id, "item id")
    root = Path(root).resolve()
    path = (root / collection / item_id).resolve()
    if root not in path.parents:
        raise OutputError(f"item folder {path} would lie outside the catalog root {root}")
    return path


def item_json(root: Path, collection: str, item_id: str) -> Path:
    """Path of an item's JSON file."""
    return item_dir(root, collection, item_id) / f"{item_id}.json"


def collection_json(root: Path, collection: str) -> Path:
    check_id(collection, "collection id")
    return Path(root).resolve() / collection / COLLECTION_FILE


def collection_to_item(item_id: str) -> str:
    """Relative href from a collection.json to one of its items."""
    return f"./{item_id}/{item_id}.json"


def catalog_to_collection(collection: str) -> str:
    """Relative href from the root catalog.json to a collection."""
    return f"./{collection}/{COLLECTION_FILE}"
