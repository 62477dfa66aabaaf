"""Whether a product on disk is whole: its item and the files it describes agree.

Used to decide that a product is up to date (together with its fingerprint): a deleted thumbnail, a
swapped, flipped or truncated COG, or an item edited by hand make the product be made again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from catalog.files import raster_facts, sha256_multihash
from catalog.walk import is_local_relative
from generator.errors import OutputError

VERIFY_CHECKSUM_MAX_BYTES = 256 << 20
"""Files up to this size are hashed to compare with ``file:checksum`` (sha-256 runs at ~0.5 GB/s, so at
most about half a second each); bigger ones are compared by size and raster grid only."""


def disagreement(
    folder: Path, item: dict[str, Any], required: Iterable[str] = (), checksums: bool = True
) -> str | None:
    """Why the item in ``folder`` does not describe the files beside it, or None when it does.

    Every local asset must exist with its ``file:size`` (and ``file:checksum`` when small enough), and
    raster assets must have the grid (``proj:code/shape/transform``) their item records.
    """
    assets = item.get("assets")
    if not isinstance(assets, dict):
        return "the item has no assets"
    for key in required:
        if key not in assets:
            return f"asset '{key}' is missing from the item"
    folder = folder.resolve()
    for key, asset in assets.items():
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str):
            return f"asset '{key}' has no href"
        if not is_local_relative(href):
            continue
        path = (folder / href).resolve()
        if folder not in path.parents:
            return f"asset '{key}' href {href} points outside its item folder"
        if not path.is_file():
            return f"{href} is missing"
        size = path.stat().st_size
        if asset.get("file:size") != size:
            return f"{path.name} has {size} bytes but the item says {asset.get('file:size')}"
        checksum = asset.get("file:checksum")
        if not isinstance(checksum, str):
            return f"asset '{key}' has no file:checksum"
        if checksums and size <= VERIFY_CHECKSUM_MAX_BYTES and sha256_multihash(path) != checksum:
            return f"{path.name} does not match the item's file:checksum"
        if "proj:shape" in asset or "proj:transform" in asset:
            try:
                facts = raster_facts(path)
            except OutputError:
                return f"{path.name} cannot be opened as a raster"
            if (
                facts.code != asset.get("proj:code")
                or list(facts.shape) != asset.get("proj:shape")
                or list(facts.transform) != asset.get("proj:transform")
            ):
                return f"the grid of {path.name} differs from the item's"
    return None
