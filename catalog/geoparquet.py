"""All items of a collection as one stac-geoparquet file (``<collection>/items.parquet``), referenced from
the collection as an asset with role ``stac-items`` (the stac-geoparquet spec's convention), so a static
catalog can be searched without a STAC API: with ``changecat search``, stac-geoparquet, pyarrow or DuckDB.

Hrefs in the file are rewritten to be relative to the file's folder (the collection folder) in a local
catalog, or absolute URLs in a published one; each row gets a ``self`` link to its item JSON.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pystac
import stac_geoparquet.arrow as sgp

from catalog import layout
from catalog.provenance import PARQUET_MEDIA_TYPE
from generator.fsmode import make_public

ITEMS_FILE = "items.parquet"
"""Name of the stac-geoparquet file in each collection folder."""

ITEMS_ASSET = "geoparquet-items"
ITEMS_ROLE = "stac-items"
"""Asset role the stac-geoparquet spec gives a collection's items file."""


def items_asset() -> pystac.Asset:
    """The collection asset pointing at its items file."""
    return pystac.Asset(
        href="./" + ITEMS_FILE,
        title="All items of this collection (stac-geoparquet)",
        description="One row per item: search it with `changecat search`, stac-geoparquet, pyarrow, DuckDB.",
        media_type=PARQUET_MEDIA_TYPE,
        roles=[ITEMS_ROLE],
    )


def _rebase(href: str, item_folder: str, base: str) -> str:
    """An href of an item in ``<collection>/<item_folder>/`` made relative to the collection folder, then
    joined to ``base`` (the collection folder's URL, or "" for a relative href)."""
    if urlsplit(href).scheme or href.startswith("/"):
        return href
    rel = posixpath.normpath(posixpath.join(item_folder, href))
    if base:
        return urljoin(base, rel)
    return rel if rel.startswith("..") else "./" + rel


def rows(items: Iterable[dict[str, Any]], base: str = "") -> list[dict[str, Any]]:
    """Item dicts (as stored in ``<collection>/<id>/<id>.json``) with hrefs rebased for the items file."""
    out = []
    for item in items:
        folder = item["id"]
        row = dict(item)
        row["assets"] = {
            k: {**a, "href": _rebase(a["href"], folder, base)} for k, a in item["assets"].items()
        }
        links = [{**lk, "href": _rebase(lk["href"], folder, base)} for lk in item.get("links", [])]
        self_href = _rebase(f"./{folder}.json", folder, base)
        row["links"] = [lk for lk in links if lk.get("rel") != "self"]
        row["links"].append({"rel": "self", "href": self_href, "type": layout.GEOJSON_MEDIA_TYPE})
        out.append(row)
    return sorted(out, key=lambda r: r["id"])


def items_table(items: Iterable[dict[str, Any]], base: str = "") -> pa.Table:
    """The stac-geoparquet table of the items (see ``rows``)."""
    return sgp.parse_stac_items_to_arrow(rows(items, base)).read_all()


def write_items_file(path: Path, items: Iterable[dict[str, Any]], base: str = "") -> None:
    """Write the items as stac-geoparquet to ``path`` atomically (mode per the umask)."""
    path = Path(path)
    table = items_table(items, base)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sgp.to_parquet(table, tmp)
        make_public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresh_items_file(root: Path, collection: str, items: Iterable[pystac.Item]) -> None:
    """The store's hook: rewrite ``<root>/<collection>/items.parquet`` from the collection's items, before
    the collection JSON that links to it is written."""
    dicts = [i.to_dict(include_self_link=False, transform_hrefs=False) for i in items]
    write_items_file(layout.collection_json(root, collection).parent / ITEMS_FILE, dicts)
