"""The hotspots table of a change item: GeoParquet (WKB polygons in WGS84 lon/lat) in, GeoJSON out.

Written with pyarrow and shapely (no geopandas): the ``geo`` metadata of GeoParquet 1.1 names the WKB
``geometry`` column, its geometry types and bbox; no ``crs`` means OGC:CRS84 (longitude, latitude), as the
spec says. Readers: geopandas.read_parquet, DuckDB spatial, QGIS (GDAL ≥ 3.5), ``changecat hotspots``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import shapely
from shapely.geometry import mapping

from catalog.files import FileFacts, read_json
from catalog.provenance import PARQUET_MEDIA_TYPE
from generator.errors import OutputError

HOTSPOTS_ASSET = "hotspots"
HOTSPOTS_NAME = "hotspots.parquet"
GEOPARQUET_VERSION = "1.1.0"
COLUMNS = ("rank", "area_m2", "mean_change", "max_change", "centroid_lon", "centroid_lat")
_SCHEMA = pa.schema(
    [
        pa.field("geometry", pa.binary(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        *(pa.field(name, pa.float64(), nullable=False) for name in COLUMNS[1:]),
    ]
)


def write_hotspots(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the rows (``generator.hotspots.hotspot_rows``) as GeoParquet at ``path``."""
    geoms = [r["geometry"] for r in rows]
    columns: dict[str, Any] = {"geometry": [shapely.to_wkb(g) for g in geoms]}
    columns.update({name: [r[name] for r in rows] for name in COLUMNS})
    bounds = shapely.total_bounds(geoms) if geoms else None
    geo = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": sorted({g.geom_type for g in geoms}),
                **({"bbox": [float(b) for b in bounds]} if bounds is not None else {}),
            }
        },
    }
    table = pa.Table.from_pydict(columns, schema=_SCHEMA.with_metadata({"geo": json.dumps(geo)}))
    pq.write_table(table, path)


def read_hotspots(path: Path) -> list[dict[str, Any]]:
    """The rows of a hotspots file, with shapely geometries, by rank."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise OutputError(f"{path}: not a readable hotspots GeoParquet file ({exc})") from None
    if "geometry" not in table.column_names or not set(COLUMNS) <= set(table.column_names):
        raise OutputError(
            f"{path}: not a hotspots table; it needs the columns geometry, {', '.join(COLUMNS)}"
        )
    rows = table.to_pylist()
    for row in rows:
        row["geometry"] = shapely.from_wkb(row["geometry"])
    return sorted(rows, key=lambda r: r["rank"])


def find_hotspots_file(path: Path) -> Path:
    """The hotspots table of an item given as its JSON file or folder, or the table itself."""
    path = Path(path)
    if path.suffix == ".parquet" and path.is_file():
        return path
    item_file = path / f"{path.name}.json" if path.is_dir() else path
    if not item_file.is_file():
        raise OutputError(
            f"{path}: no item here; give an item's JSON file, its folder, or a {HOTSPOTS_NAME} file"
        )
    try:
        asset = read_json(item_file)["assets"][HOTSPOTS_ASSET]
    except (KeyError, TypeError):
        raise OutputError(
            f"{item_file}: the item has no '{HOTSPOTS_ASSET}' asset; run it again with this changecat"
        ) from None
    return item_file.parent / asset["href"]


def to_geojson(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the rows (WGS84), for QGIS or a web map."""
    features = [
        {
            "type": "Feature",
            "geometry": json.loads(json.dumps(mapping(r["geometry"]))),
            "properties": {name: r[name] for name in COLUMNS},
        }
        for r in rows
    ]
    return {"type": "FeatureCollection", "features": features}


def hotspots_asset(file: FileFacts, count: int, threshold: float) -> pystac.Asset:
    """The item's ``hotspots`` asset."""
    return pystac.Asset(
        href="./" + HOTSPOTS_NAME,
        title="Change hotspots (GeoParquet)",
        description=(
            f"{count} connected area(s) (pixels sharing an edge) where the change is at least "
            f"{threshold:.4g}, with their area, mean and maximum change and centroid; WGS84 polygons, "
            "rank 1 = largest area × mean change. `changecat hotspots ITEM --geojson OUT` gives GeoJSON."
        ),
        media_type=PARQUET_MEDIA_TYPE,
        roles=["data"],
        extra_fields={"file:size": file.size, "file:checksum": file.checksum},
    )
