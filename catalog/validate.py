"""Validate a static catalog on disk: one line per problem, an empty list when it is valid.

Checks every catalog, collection and item reached by links against the STAC core schema (bundled with
pystac), every extension schema it declares, and changecat's own ``change`` schema; then that link and
asset hrefs resolve, ``file:size``/``file:checksum`` match, and data COGs pass ``cog_validate(strict=True)``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema.exceptions
import rasterio
from pystac.errors import STACValidationError
from pystac.serialization import identify_stac_object_type
from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator
from rasterio.errors import RasterioError
from referencing.exceptions import Unresolvable
from rio_cogeo.cogeo import cog_validate

from catalog.extension import own_schemas
from catalog.files import SHA256_MULTIHASH_PREFIX
from catalog.integrity import integrity_problems
from catalog.layout import CATALOG_FILE
from catalog.location import HTTP_TIMEOUT_S, CatalogLocation, catalog_location, is_relative
from generator.errors import OutputError, SchemaUnavailableError
from generator.urls import public_href

EXTENSION_SCHEMA_HOST = "https://stac-extensions.github.io"
"""Official extension schemas live at ``<host>/<extension>/<version>/schema.json``."""
SCHEMA_FETCH_TIMEOUT_S = 20.0
"""Connect and read timeout when fetching a schema (without ``--schemas``): offline, it fails at once."""

CHILD_RELS = ("child", "item")
COG_MEDIA_TYPE_MARK = "profile=cloud-optimized"


class LocalSchemaValidator(JsonSchemaSTACValidator):
    """pystac's JSON Schema validator with the schema cache pre-filled from local copies.

    ``schemas_dir`` holds official extension schemas as ``<extension>/<version>/schema.json``; with it the
    validator never goes online and a declared extension without a local copy is an error. Without it,
    extension schemas are fetched (and cached in memory) as pystac does. changecat's own schemas always
    come from the project's ``schemas/`` folder.
    """

    def __init__(self, schemas_dir: Path | None) -> None:
        super().__init__()
        self.schemas_dir = Path(schemas_dir) if schemas_dir is not None else None
        for uri, path in own_schemas().items():
            self.schema_cache[uri] = json.loads(path.read_text(encoding="utf-8"))
        if self.schemas_dir is not None:
            for path in sorted(self.schemas_dir.glob("*/*/schema.json")):
                rel = path.relative_to(self.schemas_dir).parent.as_posix()
                self.schema_cache[f"{EXTENSION_SCHEMA_HOST}/{rel}/schema.json"] = json.loads(
                    path.read_text(encoding="utf-8")
                )

    def local_path(self, schema_uri: str) -> str:
        """Where a schema would be found offline, or why it cannot be."""
        prefix = EXTENSION_SCHEMA_HOST + "/"
        if self.schemas_dir is not None and schema_uri.startswith(prefix):
            return str(self.schemas_dir / schema_uri[len(prefix) :])
        return "nowhere offline: pystac bundles only the STAC 1.1.0 core schemas"

    def missing_offline(self, schema_uri: str) -> bool:
        """Whether a schema is needed but cannot be had: offline (``schemas_dir`` given) and not cached."""
        return self.schemas_dir is not None and schema_uri not in self.schema_cache

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if self.missing_offline(schema_uri):
            raise GetSchemaError(
                schema_uri, FileNotFoundError(f"no local copy, expected {self.local_path(schema_uri)}")
            )
        if schema_uri not in self.schema_cache:
            self.schema_cache[schema_uri] = fetch_schema(schema_uri)
        return super()._get_schema(schema_uri)


def fetch_schema(uri: str) -> dict[str, Any]:
    """A schema fetched over HTTP with a timeout (pystac's own fetch has none and honours no proxy).

    Raises ``SchemaUnavailableError``: when one schema cannot be fetched, the others will not be either, and
    one line saying so (and how to validate offline) beats a failure per document.
    """
    request = urllib.request.Request(uri, headers={"User-Agent": "changecat"})
    try:
        with urllib.request.urlopen(request, timeout=SCHEMA_FETCH_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise SchemaUnavailableError(
            f"cannot fetch the STAC extension schema {public_href(uri)} ({reason}); to validate offline, "
            "pass --schemas DIR, a folder of <extension>/<version>/schema.json copies of "
            f"{EXTENSION_SCHEMA_HOST}"
        ) from None


@contextmanager
def _pystac_validation_quiet() -> Iterator[None]:
    """pystac logs a traceback for every schema error it re-raises; we report each one as a line instead."""
    log = logging.getLogger("pystac.validation.stac_validator")
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


def _describe(exc: STACValidationError) -> str:
    """The most relevant schema error, with where in the document it occurred."""
    errors = exc.source if isinstance(exc.source, list) else []
    best = jsonschema.exceptions.best_match(errors) if errors else None
    if best is None:
        return str(exc).splitlines()[0]
    # For oneOf/anyOf failures, the sub-error deepest in the document usually names the real field
    # (the others only say that the object is not, e.g., a Collection).
    leaves, stack = [], [best]
    while stack:
        error = stack.pop()
        if error.context:
            stack.extend(error.context)
        else:
            leaves.append(error)
    best = max(leaves, key=lambda e: len(e.absolute_path), default=best)
    where = "/".join(str(p) for p in best.absolute_path) or "(top level)"
    return f"{where}: {best.message}"


def _check_schemas(doc: dict[str, Any], where: str, validator: LocalSchemaValidator) -> list[str]:
    kind = identify_stac_object_type(doc)
    if kind is None:
        return [f"{where}: not a STAC object (no recognizable 'type')"]
    version = str(doc.get("stac_version", ""))
    problems = []
    checks: list[str | None] = [None, *[e for e in doc.get("stac_extensions", []) if isinstance(e, str)]]
    for ext in checks:
        if ext is not None and validator.missing_offline(ext):
            problems.append(
                f"{where}: declares extension {ext} but its schema is missing from {validator.schemas_dir} "
                f"(expected {validator.local_path(ext)}); add the schema file or validate online"
            )
            continue
        try:
            if ext is None:
                validator.validate_core(doc, kind, version, href=where)
            else:
                validator.validate_extension(doc, kind, version, ext, href=where)
        except STACValidationError as exc:
            problems.append(f"{where}: invalid against {ext or f'STAC {version} core'}: {_describe(exc)}")
        except GetSchemaError as exc:
            problems.append(f"{where}: {exc}")
        except Unresolvable as exc:
            problems.append(f"{where}: {ext or 'core'} schema refers to {exc}, which cannot be loaded")
    return problems


def _asset_target(href: str, base: str, location: CatalogLocation) -> str | None:
    """Where an asset href points (a path, or a URL in a remote catalog), or None when it is not ours to
    check (a URL elsewhere)."""
    scheme = urlsplit(href).scheme
    if location.remote:
        target = location.resolve(href, base)
        return target if location.inside(target) else None
    if scheme == "file":
        return urlsplit(href).path
    if scheme and len(scheme) > 1:  # one letter: a Windows drive
        return None
    return location.resolve(href, base)


def _check_asset(
    key: str, asset: dict[str, Any], where: str, base: str, location: CatalogLocation
) -> list[str]:
    href = asset.get("href", "")
    target = _asset_target(href, base, location)
    if target is None:
        return []
    name = target.rsplit("/", 1)[-1]
    actual = location.size(target)
    if actual is None and not location.exists(target):
        return [f"{where}: asset '{key}' href {href} does not resolve to a file ({location.name(target)})"]
    problems = []
    size = asset.get("file:size")
    if size is not None and actual is not None and size != actual:
        problems.append(f"{where}: asset '{key}' file:size is {size} but {name} has {actual} bytes")
    checksum = asset.get("file:checksum")
    if isinstance(checksum, str):
        if not checksum.startswith(SHA256_MULTIHASH_PREFIX):
            problems.append(
                f"{where}: asset '{key}' file:checksum {checksum[:8]}… is not a sha2-256 multihash "
                f"(must start with {SHA256_MULTIHASH_PREFIX}); cannot verify it"
            )
        elif location.multihash(target) != checksum:
            problems.append(f"{where}: asset '{key}' file:checksum does not match the contents of {name}")
    is_cog = COG_MEDIA_TYPE_MARK in str(asset.get("type", "")) or key == "change"
    if is_cog:
        try:
            with rasterio.Env(
                GDAL_HTTP_TIMEOUT=int(HTTP_TIMEOUT_S), GDAL_HTTP_CONNECTTIMEOUT=int(HTTP_TIMEOUT_S)
            ):
                valid, errors, warnings = cog_validate(target, strict=True, quiet=True)
        except (RasterioError, OSError, ValueError) as exc:
            valid, errors, warnings = False, [f"cannot open it as a raster ({exc})"], []
        if not valid:
            details = "; ".join([*errors, *warnings]) or "not a valid COG"
            problems.append(
                f"{where}: asset '{key}' {name} is not a valid Cloud-Optimized GeoTIFF: {details}"
            )
    return problems


def validate_catalog(root: Path | str, schemas_dir: Path | None = None) -> list[str]:
    """Every problem of the catalog at ``root``, one line each; empty when it is valid.

    ``root`` is a catalog's folder, its ``catalog.json``, or an http(s) URL of either. Raises
    ``SchemaUnavailableError`` when an extension schema is needed, no ``schemas_dir`` was given and it
    cannot be fetched.
    """
    if schemas_dir is not None and not Path(schemas_dir).is_dir():
        raise OutputError(
            f"schemas folder {schemas_dir} does not exist; give a folder of <ext>/<version>/schema.json"
        )
    folder = Path(root)
    if not str(root).startswith(("http://", "https://")) and folder.is_dir():
        location = CatalogLocation(str(folder.resolve() / CATALOG_FILE))  # a missing one is a problem
    else:
        location = catalog_location(root)
    validator = LocalSchemaValidator(schemas_dir)
    with _pystac_validation_quiet():
        return _walk(location, validator)


def _walk(location: CatalogLocation, validator: LocalSchemaValidator) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    todo = [location.root]
    while todo:
        href = todo.pop()
        if href in seen:
            continue
        seen.add(href)
        where = location.name(href)
        if not location.remote and not Path(href).is_file():
            problems.append(f"{where}: missing")
            continue
        try:
            doc = location.read_json(href)
        except (OSError, ValueError) as exc:
            problems.append(f"{where}: cannot read JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"{where}: expected a JSON object, found {type(doc).__name__}")
            continue
        problems.extend(_check_schemas(doc, where, validator))
        links, assets = doc.get("links"), doc.get("assets")
        # Malformed links or assets are reported by the schema checks above; only sound ones are followed.
        for link in links if isinstance(links, list) else []:
            link_href = link.get("href") if isinstance(link, dict) else None
            if not isinstance(link_href, str) or not is_relative(link_href):
                continue
            target = location.resolve(link_href, href)
            exists = location.exists(target)
            if link.get("rel") in CHILD_RELS and exists:
                todo.append(target)
            elif not exists:
                problems.append(
                    f"{where}: link rel={link.get('rel')} href {link_href} does not resolve to a file"
                )
        for key, asset in (assets if isinstance(assets, dict) else {}).items():
            if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                problems.extend(_check_asset(key, asset, where, href, location))
    if not location.remote:
        problems += integrity_problems(Path(location.folder))
    return problems
