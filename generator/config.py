"""The regions config: YAML in, a validated ``Config`` out, or one ``ConfigError`` listing every problem.

Validation happens here once (JSON Schema in ``schemas/regions/``, then the checks a schema cannot express),
so the rest of the code can trust its arguments.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import shapely
import yaml
from shapely import make_valid
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from generator.errors import ConfigError
from generator.methods import DEFAULT_METHOD, EMBEDDING_METHODS, METHODS
from generator.plan import Region

REGION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
EE_PROJECT_PATTERN = r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$"
"""Google Cloud project ids (the schema holds the same pattern)."""
EE_MAX_CONCURRENCY = 40
"""Earth Engine answers 429 past about 40 concurrent requests per project."""
EE_DEFAULT_CONCURRENCY = 16
DEFAULT_OUTPUT = "build/catalog"
AEF_URL_SCHEMES = ("http", "https", "s3", "gs")


def schemas_dir() -> Path:
    """The project's own JSON Schemas: ``schemas/`` in a source tree, ``changecat/schemas`` in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas", here.parent / "changecat" / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("changecat's schemas/ folder is missing from this installation")


@dataclass(frozen=True)
class CatalogConfig:
    id: str
    title: str
    description: str
    output: Path


@dataclass(frozen=True)
class AefSourceConfig:
    root: str  # absolute folder or URL
    kind: Literal["aef"] = "aef"


@dataclass(frozen=True)
class EarthEngineSourceConfig:
    project: str
    collection: str = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
    url: str | None = None
    max_concurrency: int = EE_DEFAULT_CONCURRENCY
    s2_context: bool = False  # add each year's Sentinel-2 RGB composite to every item
    kind: Literal["earthengine"] = "earthengine"


SourceConfig = AefSourceConfig | EarthEngineSourceConfig


@dataclass(frozen=True)
class PairsSpec:
    """Explicit ``pairs``, or a rule (``consecutive`` / ``baseline``) resolved against the source's years."""

    explicit: tuple[tuple[int, int], ...] = ()
    rule: Literal["explicit", "consecutive", "baseline"] = "explicit"
    baseline: int | None = None

    def resolve(self, available: list[int]) -> list[tuple[int, int]]:
        """Year pairs to compute, given the years the source holds (ascending)."""
        if self.rule == "consecutive":
            return list(itertools.pairwise(available))
        if self.rule == "baseline":
            return [(self.baseline, y) for y in available if y > self.baseline]  # type: ignore[misc]
        return list(self.explicit)

    def years(self) -> set[int]:
        """Years named in the config (they must exist in the source)."""
        if self.rule == "baseline":
            return {self.baseline}  # type: ignore[arg-type]
        return {y for pair in self.explicit for y in pair}


@dataclass(frozen=True)
class Config:
    path: Path
    catalog: CatalogConfig
    source: SourceConfig
    pairs: PairsSpec
    methods: tuple[str, ...]
    regions: tuple[Region, ...] = field(repr=False)


def load_config(path: Path | str) -> Config:
    """Read and validate a regions config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: malformed YAML{line}: {problem}") from exc
    if data is None:
        raise ConfigError(f"{path}: the config is empty; it needs catalog, source, pairs and regions")
    return parse_config(data, path)


def parse_config(data: Any, path: Path) -> Config:
    """Validate parsed YAML; ``path`` names the file in messages and anchors relative paths."""
    schema_errors = _schema_problems(data)
    if schema_errors:
        raise ConfigError(_report(path, schema_errors))
    base = path.resolve().parent
    problems: list[str] = []
    regions = _parse_regions(data["regions"], base, problems)
    pairs = _parse_pairs(data["pairs"], problems)
    methods = tuple(data.get("methods", [DEFAULT_METHOD]))
    for m in methods:
        if m not in METHODS:
            problems.append(f"methods: unknown method '{m}'; valid methods: {', '.join(METHODS)}")
        elif METHODS[m].from_dot is None and data["source"]["kind"] != "earthengine":
            problems.append(
                f"methods: '{m}' needs the earthengine source; the {data['source']['kind']} source "
                f"computes {', '.join(EMBEDDING_METHODS)}"
            )
    if problems:
        raise ConfigError(_report(path, problems))
    cat = data["catalog"]
    output = (base / cat.get("output", DEFAULT_OUTPUT)).resolve()
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{path}: catalog.output: {output} is a file; name a folder for the catalog")
    catalog = CatalogConfig(
        id=cat["id"],
        title=cat.get("title", cat["id"]),
        description=cat.get("description", "Change maps from satellite embeddings, made with changecat."),
        output=output,
    )
    return Config(path, catalog, _parse_source(data["source"], path), pairs, methods, tuple(regions))


def _schema_problems(data: Any) -> list[str]:
    schema = json.loads((schemas_dir() / "regions" / "v1.0.0" / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"{_where(error.absolute_path)}: {_explain(error)}")
    return problems


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(error: jsonschema.ValidationError) -> str:
    """Turn a JSON Schema error into a sentence that says what would be valid."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = ", ".join(schema.get("properties", {}))
        return f"{error.message}; valid keys here: {allowed}"
    if error.validator == "pattern" and schema.get("pattern") == REGION_ID_PATTERN:
        return (
            f"{error.instance!r} is not a valid id: use 1-63 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    if error.validator == "oneOf" and "bbox" in str(schema):
        return "a region needs exactly one of 'bbox', 'geometry' or 'file'"
    if error.validator == "oneOf" and "consecutive" in str(schema):
        return "pairs must be a list of [from, to] years, the word 'consecutive', or {baseline: YEAR}"
    if error.validator == "oneOf" and "earthengine" in str(schema):
        kind = error.instance.get("kind") if isinstance(error.instance, dict) else None
        if kind == "aef":
            return "an 'aef' source takes exactly: kind, root (a folder or https://, s3://, gs:// URL)"
        project = error.instance.get("project") if isinstance(error.instance, dict) else None
        if isinstance(project, str) and not re.match(EE_PROJECT_PATTERN, project):
            return (
                f"project {project!r} is not a Google Cloud project id: at least 6 lowercase letters, "
                "digits or hyphens, starting with a letter (e.g. my-gcp-project)"
            )
        return (
            "an 'earthengine' source takes: kind, project (required), collection, url, "
            f"max_concurrency (≤ {EE_MAX_CONCURRENCY}), s2_context"
        )
    return error.message


def _report(path: Path, problems: list[str]) -> str:
    return f"{path}: invalid config ({len(problems)} problem(s)):\n" + "\n".join(f"  - {p}" for p in problems)


def _parse_source(src: dict[str, Any], path: Path) -> SourceConfig:
    if src["kind"] == "aef":
        root = src["root"]
        scheme = root.split("://", 1)[0].lower() if "://" in root else ""
        if scheme and scheme not in AEF_URL_SCHEMES:
            raise ConfigError(
                f"{path}: source.root {root!r}: unsupported scheme {scheme}://; use a folder or an "
                "https://, http://, s3:// or gs:// URL"
            )
        if "://" not in root:
            root = str((path.resolve().parent / root).resolve())
        return AefSourceConfig(root=root)
    return EarthEngineSourceConfig(
        project=src["project"],
        collection=src.get("collection", EarthEngineSourceConfig.collection),
        url=src.get("url"),
        max_concurrency=src.get("max_concurrency", EE_DEFAULT_CONCURRENCY),
        s2_context=src.get("s2_context", False),
    )


def _parse_pairs(pairs: Any, problems: list[str]) -> PairsSpec:
    if pairs == "consecutive":
        return PairsSpec(rule="consecutive")
    if isinstance(pairs, dict):
        return PairsSpec(rule="baseline", baseline=pairs["baseline"])
    seen = set()
    for i, (a, b) in enumerate(pairs):
        if a >= b:
            problems.append(f"pairs[{i}]: [{a}, {b}]: the first year must be before the second")
        if (a, b) in seen:
            problems.append(f"pairs[{i}]: [{a}, {b}] is listed twice")
        seen.add((a, b))
    return PairsSpec(explicit=tuple((a, b) for a, b in pairs))


def _parse_regions(items: list[dict[str, Any]], base: Path, problems: list[str]) -> list[Region]:
    regions, seen = [], set()
    for i, item in enumerate(items):
        where = f"regions[{i}] ({item['id']})"
        if item["id"] in seen:
            problems.append(f"{where}: duplicate region id '{item['id']}'; ids must be unique")
        seen.add(item["id"])
        try:
            geom = _region_geometry(item, base)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        regions.append(Region(item["id"], item.get("title", item["id"]), geom))
    return regions


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
