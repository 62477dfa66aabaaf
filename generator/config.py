"""The regions config: YAML in, a validated ``Config`` out, or one ``ConfigError`` listing every problem.

Validation happens here once (JSON Schema in ``schemas/regions/``, then the checks a schema cannot express),
so the rest of the code can trust its arguments.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from generator.errors import ConfigError
from generator.hotspots import DEFAULT_MIN_AREA_M2, DEFAULT_THRESHOLDS, HotspotParams
from generator.methods import DEFAULT_METHOD, EMBEDDING_METHODS, METHODS
from generator.plan import Region
from generator.regions import region_geometry
from generator.safe_yaml import YamlTooLargeError, load_bounded
from generator.tiling import DEFAULT_TILE_ABOVE_PIXELS, DEFAULT_TILE_SIZE, Tiling

REGION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
EE_PROJECT_PATTERN = r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$"
"""Google Cloud project ids (the schema holds the same pattern)."""
EE_MAX_CONCURRENCY = 40
"""Earth Engine answers 429 past about 40 concurrent requests per project."""
EE_DEFAULT_CONCURRENCY = 16
DEFAULT_OUTPUT = "build/catalog"
AEF_URL_SCHEMES = ("http", "https", "s3", "gs")

MAX_CONFIG_BYTES = 2 * 1024 * 1024
"""A regions config is a few KB; 2 MiB leaves room for inline geometries while bounding the time and memory
of parsing it (larger geometries belong in a GeoJSON file named by ``file``)."""
DEFAULT_MAX_PIXELS = 50_000_000_000
"""Pixels a region may have in all (its grid, or all its tiles) unless the config raises ``max_pixels``:
5 × 10¹⁰ pixels at 10 m are 5 million km² (a 20° × 10° box in Europe is about 1.8 × 10¹⁰; Germany 3.6 × 10⁹),
about 100–200 GB of COGs and hours of work per product on one machine."""


def schemas_dir() -> Path:
    """The project's own JSON Schemas: ``schemas/`` in a source tree, ``changecat/schemas`` in a wheel."""
    here = Path(__file__).resolve().parent
    # The wheel's copy first: a top-level "schemas" folder in site-packages could belong to anything.
    for candidate in (here.parent / "changecat" / "schemas", here.parent / "schemas"):
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
class HotspotsConfig:
    """The config's ``hotspots``: a threshold for every method or per method (None: the defaults)."""

    threshold: float | dict[str, float] | None = None
    min_area_m2: float = DEFAULT_MIN_AREA_M2

    def params(self, method: str) -> HotspotParams:
        """The hotspot parameters of a method's products."""
        threshold = self.threshold
        if isinstance(threshold, dict):
            threshold = threshold.get(method)
        if threshold is None:
            threshold = DEFAULT_THRESHOLDS[method]
        return HotspotParams(float(threshold), float(self.min_area_m2))


@dataclass(frozen=True)
class Config:
    path: Path
    catalog: CatalogConfig
    source: SourceConfig
    pairs: PairsSpec
    methods: tuple[str, ...]
    regions: tuple[Region, ...] = field(repr=False)
    max_pixels: int = DEFAULT_MAX_PIXELS  # every region has at most this many pixels (all its tiles)
    hotspots: HotspotsConfig = HotspotsConfig()
    timeline: bool = False  # also make the year-of-largest-change product per region and embedding method
    tiling: Tiling = field(default_factory=Tiling)  # which regions are cut into tiles, and their size


YearsOf = Callable[[SourceConfig], list[int] | None]
"""The years a configured source holds (None when it cannot be opened): lets a config with problems also
report the years it asks for that the source lacks, all in one message."""


def load_config(path: Path | str, years_of: YearsOf | None = None) -> Config:
    """Read and validate a regions config file (``years_of``: see ``YearsOf``)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: the config file is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB; "
            "put large geometries in GeoJSON files named by a region's 'file'"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config is not UTF-8 text ({exc})") from exc
    try:
        data = load_bounded(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: malformed YAML{line}: {problem}") from exc
    except YamlTooLargeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        raise ConfigError(f"{path}: the config is empty; it needs catalog, source, pairs and regions")
    return parse_config(data, path, years_of)


def parse_config(data: Any, path: Path, years_of: YearsOf | None = None) -> Config:
    """Validate parsed YAML; ``path`` names the file in messages and anchors relative paths.

    Every problem is collected in one pass: the schema's, then the checks a schema cannot express on each
    part that the schema found sound (a bad region id does not hide an unknown method or a reversed pair).
    """
    schema_errors = _schema_errors(data)
    problems = [message for _, message in schema_errors]
    unsound = [where for where, _ in schema_errors]

    def sound(*where: str | int) -> bool:
        """Whether no schema error lies at or under ``where``."""
        return all(bad[: len(where)] != where for bad in unsound)

    if not isinstance(data, dict):
        raise ConfigError(_report(path, problems))
    base = path.resolve().parent
    source = _parse_source(data["source"], base, problems) if "source" in data and sound("source") else None
    pairs = _parse_pairs(data.get("pairs"), problems, sound("pairs"))
    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    if sound("methods"):
        methods = tuple(data.get("methods", [DEFAULT_METHOD]))
        _check_methods(methods, source, problems)
    max_pixels = data.get("max_pixels", DEFAULT_MAX_PIXELS) if sound("max_pixels") else None
    tiling = _parse_tiling(data.get("tiling")) if sound("tiling") else None
    regions = []
    if isinstance(data.get("regions"), list) and tiling is not None:
        regions = _parse_regions(data["regions"], base, max_pixels, sound, problems, tiling)
    catalog = (
        _parse_catalog(data["catalog"], base, problems) if "catalog" in data and sound("catalog") else None
    )
    hotspots = _parse_hotspots(data.get("hotspots"), methods, problems) if sound("hotspots") else None
    timeline = bool(data.get("timeline", False)) if sound("timeline") else False
    if timeline and sound("methods") and not set(methods) & set(EMBEDDING_METHODS):
        problems.append(
            f"timeline: needs an embedding method in methods ({', '.join(EMBEDDING_METHODS)}); "
            f"the config lists only {', '.join(methods)}"
        )
    if problems and years_of is not None and source is not None and pairs is not None:
        # Otherwise the run checks the years when it opens the source; here they join the other problems.
        available = years_of(source)
        missing = sorted(pairs.years() - set(available)) if available is not None else []
        if missing:
            problems.append(
                f"pairs: the source has no data for year(s) {', '.join(map(str, missing))}; "
                f"available years: {', '.join(map(str, available or [])) or 'none'}"
            )
    if problems:
        raise ConfigError(_report(path, problems))
    assert catalog and source and pairs and hotspots and tiling  # sound parts, as no problem was found
    return Config(
        path,
        catalog,
        source,
        pairs,
        methods,
        tuple(regions),
        max_pixels or DEFAULT_MAX_PIXELS,
        hotspots,
        timeline,
        tiling,
    )


def _parse_tiling(spec: dict[str, Any] | None) -> Tiling:
    """The config's ``tiling`` (its ranges are the schema's)."""
    spec = spec or {}
    return Tiling(
        tile_size=spec.get("tile_size", DEFAULT_TILE_SIZE),
        above_pixels=spec.get("above_pixels", DEFAULT_TILE_ABOVE_PIXELS),
    )


def _parse_hotspots(
    spec: dict[str, Any] | None, methods: tuple[str, ...], problems: list[str]
) -> HotspotsConfig:
    """The hotspot settings; a threshold per method must name a method of the config, within its range."""
    spec = spec or {}
    threshold = spec.get("threshold")
    given = threshold if isinstance(threshold, dict) else dict.fromkeys(methods, threshold)
    for method, value in given.items():
        if method not in methods:
            problems.append(
                f"hotspots.threshold: '{method}' is not one of the config's methods ({', '.join(methods)})"
            )
        elif value is not None and method in METHODS and value > METHODS[method].value_range[1]:
            lo, hi = METHODS[method].value_range
            problems.append(
                f"hotspots.threshold: {value} is above the largest {method} change ({hi:g}); "
                f"use a value in ({lo:g}, {hi:g}]"
            )
    return HotspotsConfig(threshold, spec.get("min_area_m2", DEFAULT_MIN_AREA_M2))


def _schema_errors(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(where, message) of every schema error, in document order."""
    schema = json.loads((schemas_dir() / "regions" / "v1.0.0" / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in validator.iter_errors(data):
        if (
            error.validator == "oneOf"
            and tuple(error.absolute_path) == ("pairs",)
            and isinstance(error.instance, list)
        ):
            # A list of pairs: say which pair is wrong rather than listing the other forms pairs may take.
            errors.extend(e for e in error.context or [] if e.schema_path and e.schema_path[0] == 0)
        else:
            errors.append(error)
    errors.sort(key=lambda e: list(map(str, e.absolute_path)))
    return [(tuple(e.absolute_path), f"{_where(e.absolute_path)}: {_explain(e)}") for e in errors]


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


def _parse_catalog(cat: dict[str, Any], base: Path, problems: list[str]) -> CatalogConfig | None:
    output = (base / cat.get("output", DEFAULT_OUTPUT)).resolve()
    if output.exists() and not output.is_dir():
        problems.append(f"catalog.output: {output} is a file; name a folder for the catalog")
        return None
    return CatalogConfig(
        id=cat["id"],
        title=cat.get("title", cat["id"]),
        description=cat.get("description", "Change maps from satellite embeddings, made with changecat."),
        output=output,
    )


def _parse_source(src: dict[str, Any], base: Path, problems: list[str]) -> SourceConfig | None:
    if src["kind"] == "aef":
        root = src["root"]
        scheme = root.split("://", 1)[0].lower() if "://" in root else ""
        if scheme and scheme not in AEF_URL_SCHEMES:
            problems.append(
                f"source.root {root!r}: unsupported scheme {scheme}://; use a folder or an "
                "https://, http://, s3:// or gs:// URL"
            )
            return None
        if "://" not in root:
            root = str((base / root).resolve())
        return AefSourceConfig(root=root)
    return EarthEngineSourceConfig(
        project=src["project"],
        collection=src.get("collection", EarthEngineSourceConfig.collection),
        url=src.get("url"),
        max_concurrency=src.get("max_concurrency", EE_DEFAULT_CONCURRENCY),
        s2_context=src.get("s2_context", False),
    )


def _check_methods(methods: tuple[str, ...], source: SourceConfig | None, problems: list[str]) -> None:
    for m in methods:
        if m not in METHODS:
            problems.append(f"methods: unknown method '{m}'; valid methods: {', '.join(METHODS)}")
        elif METHODS[m].from_dot is None and source is not None and source.kind != "earthengine":
            problems.append(
                f"methods: '{m}' needs the earthengine source; the {source.kind} source "
                f"computes {', '.join(EMBEDDING_METHODS)}"
            )


def _parse_pairs(pairs: Any, problems: list[str], sound: bool) -> PairsSpec | None:
    """The pairs spec when ``sound``; the order and repeats of well-formed explicit pairs are checked even
    when others are malformed (the schema reports those)."""
    if sound and pairs == "consecutive":
        return PairsSpec(rule="consecutive")
    if sound and isinstance(pairs, dict):
        return PairsSpec(rule="baseline", baseline=pairs["baseline"])
    if not isinstance(pairs, list):
        return None
    seen = set()
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(y) is int for y in pair)):
            continue
        a, b = pair
        if a >= b:
            problems.append(f"pairs[{i}]: [{a}, {b}]: the first year must be before the second")
        if (a, b) in seen:
            problems.append(f"pairs[{i}]: [{a}, {b}] is listed twice")
        seen.add((a, b))
    return PairsSpec(explicit=tuple((a, b) for a, b in pairs)) if sound else None


REGION_SHAPES = ("bbox", "geometry", "file")


def _parse_regions(
    items: list[Any], base: Path, max_pixels: int | None, sound: Any, problems: list[str], tiling: Tiling
) -> list[Region]:
    """The regions whose entries are sound; problems of each part of each entry are collected."""
    regions, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        rid = item.get("id")
        where = f"regions[{i}] ({rid})" if isinstance(rid, str) else f"regions[{i}]"
        if isinstance(rid, str):
            if rid in seen:
                problems.append(f"{where}: duplicate region id '{rid}'; ids must be unique")
            seen.add(rid)
        shapes = [key for key in REGION_SHAPES if key in item]
        if len(shapes) != 1 or not sound("regions", i, shapes[0]):
            continue  # the schema's message says what is wrong with it
        try:
            geom = region_geometry(item, base, max_pixels, tiling)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if sound("regions", i):
            regions.append(Region(rid, item.get("title", rid), geom))
    return regions
