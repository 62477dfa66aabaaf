"""Search a static catalog, local or published, through its stac-geoparquet files (no STAC API needed).

The root catalog is read, then each collection it links to, then each collection's ``stac-items`` asset;
the filters run on the parquet columns. Relative hrefs in the results are resolved against the parquet
file's location, so printed asset URLs can be opened as they are.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import stac_geoparquet.arrow as sgp

from catalog.geoparquet import ITEMS_ROLE
from catalog.layout import CATALOG_FILE
from generator.errors import SearchError
from generator.urls import public_href

HTTP_TIMEOUT_S = 30
"""Seconds to wait for a published catalog's server before giving up."""


@dataclass(frozen=True)
class Query:
    """What to look for; None matches everything. ``years`` is an exact (from, to) pair; ``bbox`` is
    (west, south, east, north) in WGS84 and matches items whose bbox intersects it."""

    bbox: tuple[float, float, float, float] | None = None
    years: tuple[int, int] | None = None
    methods: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


def _is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https", "file")


def _read(location: str) -> bytes:
    """Bytes of a local file or an http(s) URL; SearchError names the location (without credentials)."""
    try:
        if _is_url(location):
            with urllib.request.urlopen(location, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.read()
        return Path(location).read_bytes()
    except (OSError, urllib.error.URLError) as exc:
        raise SearchError(f"{public_href(location)}: cannot read it ({exc})") from exc


def _json(location: str) -> dict[str, Any]:
    try:
        data = json.loads(_read(location))
    except json.JSONDecodeError as exc:
        raise SearchError(f"{public_href(location)}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SearchError(f"{public_href(location)}: expected a STAC object")
    return data


def catalog_location(source: str) -> str:
    """The root catalog.json of a catalog folder, a catalog URL, or a catalog's base URL."""
    if _is_url(source):
        return source if source.endswith(".json") else source.rstrip("/") + "/" + CATALOG_FILE
    path = Path(source)
    return str((path / CATALOG_FILE) if path.is_dir() else path)


def _join(base: str, href: str) -> str:
    if _is_url(base) or urlsplit(href).scheme:
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def items_files(source: str) -> list[str]:
    """Locations of the stac-geoparquet files of every collection the root catalog links to."""
    root = catalog_location(source)
    files = []
    for link in _json(root).get("links", []):
        if link.get("rel") != "child":
            continue
        coll_loc = _join(root, link["href"])
        for asset in _json(coll_loc).get("assets", {}).values():
            if ITEMS_ROLE in asset.get("roles", []):
                files.append(_join(coll_loc, asset["href"]))
    if not files:
        raise SearchError(
            f"{public_href(root)}: no collection has a stac-geoparquet asset (role {ITEMS_ROLE!r}); "
            "re-run `changecat run` (or publish again) with this version to write it"
        )
    return files


def _filter(table: pa.Table, q: Query) -> pa.Table:
    mask = pa.array([True] * table.num_rows)
    if q.years is not None:
        mask = pc.and_(mask, pc.equal(table["change:from_year"], q.years[0]))
        mask = pc.and_(mask, pc.equal(table["change:to_year"], q.years[1]))
    if q.methods:
        mask = pc.and_(mask, pc.is_in(table["change:method"], pa.array(q.methods)))
    if q.regions:
        mask = pc.and_(mask, pc.is_in(table["change:region"], pa.array(q.regions)))
    if q.bbox is not None:
        w, s, e, n = q.bbox
        b = table["bbox"]
        for field, op, value in (("xmin", pc.less_equal, e), ("xmax", pc.greater_equal, w)):
            mask = pc.and_(mask, op(pc.struct_field(b, field), value))
        for field, op, value in (("ymin", pc.less_equal, n), ("ymax", pc.greater_equal, s)):
            mask = pc.and_(mask, op(pc.struct_field(b, field), value))
    return table.filter(mask)


def _absolute(item: dict[str, Any], base: str) -> dict[str, Any]:
    for asset in item.get("assets", {}).values():
        asset["href"] = _join(base, asset["href"])
    for link in item.get("links", []):
        link["href"] = _join(base, link["href"])
    return item


def search(source: str, query: Query) -> list[dict[str, Any]]:
    """Items (dicts, hrefs absolute) of the catalog at ``source`` matching ``query``, sorted by id."""
    found = []
    for location in items_files(source):
        try:
            table = pq.read_table(io.BytesIO(_read(location)))
        except pa.ArrowException as exc:
            raise SearchError(f"{public_href(location)}: not a readable parquet file ({exc})") from exc
        missing = {"change:from_year", "change:to_year", "change:method", "change:region", "bbox"}
        if table.num_rows and (absent := missing - set(table.column_names)):
            raise SearchError(f"{public_href(location)}: columns {sorted(absent)} missing")
        if table.num_rows:
            found += [_absolute(i, location) for i in sgp.stac_table_to_items(_filter(table, query))]
    return sorted(found, key=lambda i: i["id"])
