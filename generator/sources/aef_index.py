"""The AEF index (``aef_index.parquet``): one row per COG file — its path, year, CRS, UTM origin and WGS84
footprint — read from a local folder, http(s), s3 or gs, with what identifies the index's release.

The footprint column's name is not fixed: GeoParquet names it in the file's ``geo`` metadata
(``primary_column``; GeoPackage-derived files often call it ``geom``), and the public index also holds the
``wgs84_west/south/east/north`` bounds, which are used when there is no geometry column. ``path`` is
relative to the index's folder in a mirror, or an absolute URL: in the public copy ``s3://…`` even when the
index is read over https. s3 tile paths get the bucket's region for GDAL when none is configured.

The index is read over http(s) through fsspec with a real User-Agent (the Source Cooperative host refuses
Python-urllib's default one), and from s3/gs through pyarrow's filesystems, which read the same ``AWS_*``
variables (region, endpoint, ``AWS_NO_SIGN_REQUEST``) as GDAL does for the tiles.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pyarrow as pa
import pyarrow.fs as pafs
import shapely
from shapely.geometry.base import BaseGeometry

from generator.errors import SourceError
from generator.sources.remote import USER_AGENT, file_info, join, read_parquet, scheme_of
from generator.urls import public_href

INDEX_NAME = "aef_index.parquet"
COLUMNS = ("fid", "path", "year", "crs", "utm_west", "utm_north")
"""Columns every index must have (besides a footprint)."""
BOUNDS_COLUMNS = ("wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
"""The footprint as bounds, in the public index beside its geometry column: the fallback footprint."""
PUBLIC_BUCKET = "us-west-2.opendata.source.coop"
"""Source Cooperative's bucket, which holds the public AEF copy (its tile paths point there)."""
PUBLIC_BUCKET_REGION = "us-west-2"
"""Its region: s3 reads of it are signed for this region when AWS_REGION is not set."""


@dataclass(frozen=True)
class IndexRow:
    """One file of the index; ``href`` is absolute (URL or local path)."""

    fid: int
    href: str
    year: int
    crs: str
    utm_west: float
    utm_north: float
    geometry: BaseGeometry  # WGS84 footprint


@dataclass(frozen=True)
class AefIndex:
    """What an AEF source needs from its index: the rows, the release, GDAL options for its tiles."""

    href: str
    rows: list[IndexRow]
    version: str  # e.g. "aef_index.parquet etag 5d41…" or "… 78123456 bytes, modified 2025-07-30T…"
    gdal_options: dict[str, str] = field(default_factory=dict)


def load_index(root: str) -> AefIndex:
    """Read ``<root>/aef_index.parquet``. Raises ``SourceError`` naming the (public) href and what is
    missing when the index cannot be read or has no usable footprint."""
    href = join(root, INDEX_NAME)
    shown = public_href(href)
    footprint: list[str] = []

    def choose(schema: pa.Schema) -> list[str]:
        geo_column = geometry_column(schema)
        footprint.extend([geo_column] if geo_column else BOUNDS_COLUMNS)
        missing = [c for c in (*COLUMNS, *footprint) if c not in schema.names]
        if missing:
            raise SourceError(
                f"AEF index {shown} lacks column(s) {', '.join(missing)}: an AEF index has "
                f"{', '.join(COLUMNS)} and a footprint (a GeoParquet geometry column named in its 'geo' "
                f"metadata, or {', '.join(BOUNDS_COLUMNS)})"
            )
        return [*COLUMNS, *footprint]

    table = read_parquet(href, choose)
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    if footprint == list(BOUNDS_COLUMNS):
        geoms = list(shapely.box(*(cols[c] for c in BOUNDS_COLUMNS)))
    else:
        try:
            geoms = list(shapely.from_wkb(cols[footprint[0]]))
        except (shapely.errors.GEOSException, TypeError) as exc:
            raise SourceError(f"AEF index {shown}: column {footprint[0]} is not WKB ({exc})") from None
    rows = [
        IndexRow(
            fid=int(cols["fid"][i]),
            href=join(root, str(cols["path"][i])),
            year=int(cols["year"][i]),
            crs=str(cols["crs"][i]),
            utm_west=float(cols["utm_west"][i]),
            utm_north=float(cols["utm_north"][i]),
            geometry=geoms[i],
        )
        for i in range(table.num_rows)
    ]
    return AefIndex(href, rows, index_version(href), tile_gdal_options([r.href for r in rows], os.environ))


def geometry_column(schema: pa.Schema) -> str | None:
    """The GeoParquet primary geometry column (``geo`` metadata), if the file has one."""
    try:
        geo = json.loads((schema.metadata or {}).get(b"geo") or b"{}")
    except ValueError:
        geo = {}
    column = geo.get("primary_column") if isinstance(geo, dict) else None
    return column if isinstance(column, str) and column in schema.names else None


def tile_gdal_options(hrefs: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """GDAL options the index's tiles need beyond the common ones: a real User-Agent, and for s3 paths the
    bucket's region when none is configured (GDAL signs for us-east-1 otherwise)."""
    options = {"GDAL_HTTP_USERAGENT": USER_AGENT}
    if environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"):
        return options
    buckets = {urlsplit(h).netloc for h in hrefs if scheme_of(h) == "s3"}
    if PUBLIC_BUCKET in buckets:
        options["AWS_REGION"] = PUBLIC_BUCKET_REGION
    elif buckets and not (environ.get("AWS_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_S3")):
        # Unresolvable: GDAL's default region then; a wrong one shows as an error naming the tile.
        with contextlib.suppress(OSError):
            options["AWS_REGION"] = pafs.resolve_s3_region(sorted(buckets)[0])
    return options


def index_version(href: str) -> str:
    """The index's file name with its ETag (http) or size and modification time: which release of the
    dataset the index describes, for the products' provenance."""
    name = urlsplit(href).path.rsplit("/", 1)[-1] if scheme_of(href) else Path(href).name
    try:
        info = file_info(href)
    except (OSError, ValueError, aiohttp.ClientError):
        return name
    if info.get("etag"):
        return f"{name} etag {info['etag']}"
    parts = [name] + ([f"{info['size']} bytes"] if info.get("size") is not None else [])
    return ", ".join(parts + ([f"modified {info['mtime']}"] if info.get("mtime") else []))
