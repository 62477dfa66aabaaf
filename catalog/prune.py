"""Removing products the config no longer asks for: only items changecat wrote, only the files their
items name; a folder holding anything else is kept with those files."""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog import layout
from catalog.build import SOFTWARE
from catalog.files import read_json
from catalog.integrity import STAGING_PREFIX, item_folder_names
from catalog.lock import write_lock
from catalog.walk import is_local_relative, iter_collections
from generator.errors import OutputError

if TYPE_CHECKING:
    from catalog.store import CatalogStore


def _is_changecat_item(item: dict[str, Any]) -> bool:
    props = item.get("properties")
    if not isinstance(props, dict) or "change:fingerprint" not in props:
        return False
    software = props.get("processing:software")
    return isinstance(software, dict) and SOFTWARE in software


def _read_item(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except OutputError:
        return None


def prune_candidates(root: Path, wanted: set[str]) -> list[tuple[str, str]]:
    """(collection, item id) of every changecat item in the catalog's collections (linked or left
    unlinked by a crash) whose id is not in ``wanted``."""
    root = Path(root).resolve()
    if not (root / layout.CATALOG_FILE).is_file():
        return []
    out = []
    for cpath, _ in iter_collections(root):
        if cpath.parent.parent != root:
            continue  # not in changecat's layout: not ours to prune
        coll = cpath.parent.name
        for name in item_folder_names(cpath.parent):
            item = _read_item(cpath.parent / name / f"{name}.json")
            if (
                name not in wanted
                and item is not None
                and item.get("id") == name
                and _is_changecat_item(item)
            ):
                out.append((coll, name))
    return sorted(out)


def _own_files(folder: Path, item: dict[str, Any]) -> set[Path]:
    """The item JSON and the asset files it names inside its folder."""
    files = {folder / f"{folder.name}.json"}
    assets = item.get("assets")
    for asset in assets.values() if isinstance(assets, dict) else []:
        href = asset.get("href") if isinstance(asset, dict) else None
        if isinstance(href, str) and is_local_relative(href):
            path = (folder / href).resolve()
            if path.parent == folder:
                files.add(path)
    return files


def remove_products(
    store: CatalogStore, unwanted: list[tuple[str, str]], note: Callable[[str], None]
) -> None:
    """Take the items out of their collections and remove their files, under the write lock."""
    by_collection: dict[str, list[str]] = defaultdict(list)
    for coll, item_id in unwanted:
        by_collection[coll].append(item_id)
    trash: list[Path] = []
    with write_lock(store.root, note):
        store.check_owner()
        emptied = []
        for coll, ids in by_collection.items():
            for item_id in ids:
                folder = layout.item_dir(store.root, coll, item_id)
                item = _read_item(folder / f"{item_id}.json")
                if item is None or not _is_changecat_item(item):
                    continue
                own = _own_files(folder, item)
                others = sorted(p.name for p in folder.iterdir() if p.resolve() not in own)
                if others:
                    for path in sorted(own):
                        path.unlink(missing_ok=True)
                    note(f"kept {folder}: it holds files changecat did not write ({', '.join(others)})")
                else:
                    # One rename takes the whole product out; the folder is deleted after the lock.
                    aside = Path(
                        tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}pruned-{item_id}-", dir=folder.parent)
                    )
                    folder.rename(aside / item_id)
                    trash.append(aside)
                note(f"pruned {coll}/{item_id}")
            if not store.write_collection(coll, drop=ids):
                emptied.append(coll)
        store.write_root([], drop=emptied)
        for path in trash:
            shutil.rmtree(path, ignore_errors=True)
        for coll in emptied:
            folder = store.root / coll
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
