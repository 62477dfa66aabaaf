"""Walk a static catalog by its links (root → child collections → items), reading JSON only.

Only what the links reach counts: an item file left on disk without a link (a crash between writing an
item and its collection) is not part of the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from catalog.files import read_json
from catalog.layout import CATALOG_FILE


def is_local_relative(href: str) -> bool:
    """Whether an href is a relative path (not a URL, not absolute)."""
    return not urlsplit(href).scheme and not href.startswith("/")


def link_targets(doc: dict[str, Any], rel: str, base: Path) -> list[Path]:
    """Files that the relative links of ``rel`` in ``doc`` (stored at ``base``) point to."""
    out = []
    links = doc.get("links")
    for link in links if isinstance(links, list) else []:
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str) and link.get("rel") == rel and is_local_relative(href):
            out.append((base.parent / href).resolve())
    return out


def iter_collections(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, JSON) of every collection linked from ``<root>/catalog.json`` that exists."""
    catalog_path = Path(root) / CATALOG_FILE
    catalog = read_json(catalog_path)
    for path in link_targets(catalog, "child", catalog_path):
        if path.is_file():
            yield path, read_json(path)


def iter_items(collection_path: Path, collection: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, JSON) of every item linked from a collection that exists."""
    for path in link_targets(collection, "item", collection_path):
        if path.is_file():
            yield path, read_json(path)


def iter_all_items(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every item reachable from the root catalog; nothing if there is no catalog yet."""
    if not (Path(root) / CATALOG_FILE).is_file():
        return
    for cpath, coll in iter_collections(root):
        yield from iter_items(cpath, coll)
