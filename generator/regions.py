"""A region's geometry from the config (a bbox, an inline GeoJSON geometry or a GeoJSON file), checked and
bounded: valid WGS84 polygons, a bounded number of vertices and a bounded pixel count (one UTM grid, or
tiles on the UTM zones it spans when it is too large for one: ``generator.tiling``).

Problems are raised as ``ValueError`` with a message naming the input; ``generator.config`` collects them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import shapely
from shapely import make_valid
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from generator.grid import RESOLUTION_M, size_problem
from generator.tiling import (
    Tiling,
    needs_tiles,
    part_pixels,
    tile_count_problem,
    utm_range_problem,
    zone_parts,
)

MAX_GEOJSON_BYTES = 64 * 1024 * 1024
"""A region's GeoJSON file: 64 MiB is about 1.5 million vertices, and parsing it takes about 1 GB."""
SIMPLIFY_ABOVE_VERTICES = 10_000
"""Region geometries with more vertices than this are simplified at ``SIMPLIFY_TOLERANCE_DEG`` first."""
SIMPLIFY_TOLERANCE_DEG = 1e-6
"""1e-6° is at most 0.11 m (a ninetieth of a 10 m pixel): detail below it changes no pixel in practice, but
costs work per vertex in every block's mask."""
MAX_REGION_VERTICES = 50_000
"""Vertices a region may keep after that simplification: every block of every product masks with all of
them, and simplifying and checking a spiky polygon takes tens of seconds beyond this size (84 s at 146,000
vertices here). 50,000 vertices describe any boundary to a few metres."""


def region_geometry(
    item: dict[str, Any], base: Path, max_pixels: int | None, tiling: Tiling | None = None
) -> BaseGeometry:
    """The checked geometry of a schema-valid region entry (files resolve against ``base``); its size is
    checked against ``max_pixels`` unless that is None (itself invalid). A region too large for one grid
    (``tiling``) must lie in UTM's latitudes and its tiles hold at most ``max_pixels`` in all."""
    geom = _region_geometry(item, base)
    tiling = tiling or Tiling()
    if not needs_tiles(geom, tiling):
        problem = size_problem(geom, max_pixels) if max_pixels is not None else None
    else:
        problem = utm_range_problem(geom)
        if problem is None:
            parts = zone_parts(geom)
            problem = _total_problem(part_pixels(parts), len(parts), max_pixels)
            problem = problem or tile_count_problem(parts, tiling.tile_size)
    if problem:
        raise ValueError(problem)
    return geom


def _total_problem(pixels: int, parts: int, max_pixels: int | None) -> str | None:
    """Why a tiled region is too large in all (more than ``max_pixels``), or None."""
    if max_pixels is None or pixels <= max_pixels:
        return None
    return (
        f"its tiles in {parts} UTM zone part(s) cover about {pixels:,} pixels of {RESOLUTION_M:g} m, more "
        f"than max_pixels ({max_pixels:,}), the most a region may have in all: split it into smaller "
        "regions, or raise max_pixels in the config if the run may take that long and that much space "
        "(about 2–4 GB of COGs per 10⁹ pixels per product)"
    )


def _bounded_vertices(geom: BaseGeometry, what: str) -> BaseGeometry:
    """The geometry simplified at ``SIMPLIFY_TOLERANCE_DEG`` when it has many vertices; refused when more
    than ``MAX_REGION_VERTICES`` would remain.

    Runs before the validity check, whose cost grows faster than the number of vertices. The count that
    would remain is estimated first by simplifying each ring on its own (fast, no topology kept), so only
    geometries that will end up bounded pay for the topology-preserving simplification.
    """
    count = shapely.get_num_coordinates(geom)
    if count <= SIMPLIFY_ABOVE_VERTICES:
        return geom
    rings = shapely.get_rings(shapely.get_parts(geom))
    kept = int(
        shapely.get_num_coordinates(
            shapely.simplify(rings, SIMPLIFY_TOLERANCE_DEG, preserve_topology=False)
        ).sum()
    )
    if kept > MAX_REGION_VERTICES:
        raise ValueError(
            f"{what}: {count:,} vertices, still about {kept:,} without the detail below "
            f"{SIMPLIFY_TOLERANCE_DEG:g}° (≈ 0.1 m); at most {MAX_REGION_VERTICES:,} are supported, because "
            "every block of every product is masked with all of them: simplify it to a few metres (e.g. "
            "shapely's simplify or ogr2ogr -simplify) or split the region"
        )
    return geom.simplify(SIMPLIFY_TOLERANCE_DEG, preserve_topology=True)


def _region_geometry(item: dict[str, Any], base: Path) -> BaseGeometry:
    if "bbox" in item:
        west, south, east, north = item["bbox"]
        if west > east:
            raise ValueError(
                f"bbox {item['bbox']}: west > east; if the region crosses the antimeridian, "
                "split it into two regions at 180°"
            )
        if south >= north or west == east:
            raise ValueError(f"bbox {item['bbox']}: must be [west, south, east, north] with south < north")
        return box(west, south, east, north)
    if "geometry" in item:
        return _check_polygon(item["geometry"], "geometry")
    return _check_polygon(_read_geojson(base / item["file"], item["file"]), f"file {item['file']}")


def _read_geojson(path: Path, name: str) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_GEOJSON_BYTES:
            raise ValueError(
                f"file {name}: {size / 2**20:.0f} MiB is more than the {MAX_GEOJSON_BYTES // 2**20} MiB a "
                "region file may have; simplify the geometry (a few metres is plenty at 10 m pixels)"
            )
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"file {name}: cannot read it ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"file {name}: not valid JSON ({exc})") from exc
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "Feature":
        return _geometry_of(doc, name)
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or not features:
            raise ValueError(f"file {name}: the FeatureCollection has no features")
        parts = []
        for i, feature in enumerate(features):
            part = _check_polygon(_geometry_of(feature, name), f"file {name}: features[{i}]")
            parts.append(part)
        # Features may touch or overlap (a district and its park): the region is their union.
        return mapping(unary_union(parts))
    if not isinstance(doc, dict):
        raise ValueError(f"file {name}: expected a GeoJSON object, found {type(doc).__name__}")
    return doc


def _geometry_of(feature: Any, name: str) -> dict[str, Any]:
    geometry = feature.get("geometry") if isinstance(feature, dict) else None
    if not isinstance(geometry, dict):
        raise ValueError(f"file {name}: a feature without a geometry object (a Polygon or MultiPolygon)")
    return geometry


def _check_polygon(geojson: dict[str, Any], what: str) -> BaseGeometry:
    kind = geojson.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"{what}: must be a Polygon or MultiPolygon, found {kind or 'nothing'}")
    try:
        geom = shape(geojson)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError, shapely.errors.GEOSException) as exc:
        raise ValueError(f"{what}: malformed coordinates ({exc})") from exc
    geom = _bounded_vertices(geom, what)
    if geom.is_empty:
        raise ValueError(f"{what}: the geometry is empty")
    if not geom.is_valid:
        raise ValueError(
            f"{what}: invalid geometry ({explain_validity(geom)}); fix it, e.g. with shapely.make_valid "
            f"(which gives {make_valid(geom).geom_type})"
        )
    if geom.area == 0:
        raise ValueError(f"{what}: the polygon has zero area")
    west, south, east, north = geom.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise ValueError(f"{what}: coordinates must be WGS84 lon/lat within ±180/±90, not {geom.bounds}")
    if east - west > 180:
        raise ValueError(
            f"{what}: spans {east - west:.1f}° of longitude, which means it crosses the antimeridian; "
            "split it into two regions at 180°"
        )
    if not math.isfinite(geom.area):
        raise ValueError(f"{what}: coordinates must be finite numbers")
    return geom
