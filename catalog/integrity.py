"""What link-following validation cannot see: leftovers of interrupted runs and item folders no collection
links. Both are reported by ``validate`` and cleaned (leftovers) or re-linked (items) by the next run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from catalog.files import read_json
from catalog.layout import CATALOG_FILE, COLLECTION_FILE
from catalog.lock import LOCK_FILE, RUNS_FILE, no_run_alive
from catalog.walk import link_targets
from generator.errors import OutputError

STAGING_PREFIX = ".staging-"
"""Folders a run writes a product in before switching it into place (in the collection folder)."""
TMP_SUFFIX = ".tmp"
"""Suffix of the temporary files JSON is written to before its atomic rename."""
LEFTOVER_DEPTH = 3
"""Levels below the root where runs write: root, collection folders, item folders."""


def leftovers(root: Path) -> list[Path]:
    """``.staging-*`` folders and ``.*.tmp`` files anywhere a run writes (in use or not)."""
    found: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return found
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            if name.startswith(STAGING_PREFIX):
                found.append(here / name)
                dirnames.remove(name)
        found += [here / n for n in filenames if n.startswith(".") and n.endswith(TMP_SUFFIX)]
        if len(here.parts) - base_depth >= LEFTOVER_DEPTH - 1:
            dirnames.clear()
    return sorted(found)


def remove_leftovers(root: Path) -> list[Path]:
    """Remove the leftovers of earlier runs. Call only while no other run is alive (``RunPresence``)."""
    removed = []
    for path in leftovers(root):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if not path.exists():
            removed.append(path)
    return removed


def _collection_folders(root: Path) -> Iterator[tuple[Path, set[Path]]]:
    """Each collection folder under ``root`` with the item folders its collection.json links."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / COLLECTION_FILE
        if not path.is_file():
            continue
        try:
            doc = read_json(path)
        except OutputError:
            continue  # reported by the schema checks
        yield folder, {p.parent for p in link_targets(doc, "item", path)}


def item_folder_names(collection_folder: Path) -> list[str]:
    """Sub-folders that hold an item JSON named after the folder (``<id>/<id>.json``)."""
    return sorted(
        p.name
        for p in collection_folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / f"{p.name}.json").is_file()
    )


def unlinked_item_folders(root: Path) -> list[Path]:
    """Item folders that no collection links (a run interrupted between an item and its collection)."""
    out = []
    for folder, linked in _collection_folders(Path(root).resolve()):
        out += [folder / n for n in item_folder_names(folder) if (folder / n).resolve() not in linked]
    return out


def unlinked_collections(root: Path) -> list[Path]:
    """Collection folders whose collection.json the root catalog does not link."""
    root = Path(root).resolve()
    catalog = root / CATALOG_FILE
    try:
        linked = set(link_targets(read_json(catalog), "child", catalog))
    except OutputError:
        return []
    return [f / COLLECTION_FILE for f, _ in _collection_folders(root) if (f / COLLECTION_FILE) not in linked]


def integrity_problems(root: Path) -> list[str]:
    """One line per unlinked item folder, unlinked collection and leftover of an interrupted run."""
    root = Path(root).resolve()
    if not root.is_dir():
        return []
    problems = [
        f"{p.relative_to(root).as_posix()}: item folder that no collection links (the run that made it "
        "was interrupted); a plain `changecat run` links it"
        for p in unlinked_item_folders(root)
    ]
    problems += [
        f"{p.relative_to(root).as_posix()}: collection that {CATALOG_FILE} does not link"
        for p in unlinked_collections(root)
    ]
    if no_run_alive(root):
        problems += [
            f"{p.relative_to(root).as_posix()}: left over by an interrupted run; the next `changecat run` "
            "removes it (it must not be published)"
            for p in leftovers(root)
        ]
    return problems


HIDDEN_FILES = (LOCK_FILE, RUNS_FILE)
"""changecat's own lock files in the catalog root (not part of the catalog; exclude them when syncing)."""
