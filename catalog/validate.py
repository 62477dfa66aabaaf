"""Validate a static catalog on disk: one line per problem, an empty list when it is valid.

Checks every catalog, collection and item reached by links against the STAC core schema (bundled with
pystac), every extension schema it declares, and changecat's own ``change`` schema; then that link and
asset hrefs resolve, ``file:size``/``file:checksum`` match, and data COGs pass ``cog_validate(strict=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema.exceptions
from pystac.errors import STACValidationError
from pystac.serialization import identify_stac_object_type
from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator
from rasterio.errors import RasterioError
from referencing.exceptions import Unresolvable
from rio_cogeo.cogeo import cog_validate

from catalog.extension import own_schemas
from catalog.files import SHA256_MULTIHASH_PREFIX, sha256_multihash
from catalog.integrity import integrity_problems
from catalog.layout import CATALOG_FILE
from catalog.walk import is_local_relative
from generator.errors import OutputError

EXTENSION_SCHEMA_HOST = "https://stac-extensions.github.io"
"""Official extension schemas live at ``<host>/<extension>/<version>/schema.json``."""

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
        return super()._get_schema(schema_uri)


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


def _local_file(href: str, base: Path) -> Path | None:
    """The file an href points to, or None for remote URLs (not checked)."""
    scheme = urlsplit(href).scheme
    if scheme == "file":
        return Path(urlsplit(href).path)
    if scheme and len(scheme) > 1:  # one letter: a Windows drive
        return None
    return (base.parent / href).resolve() if is_local_relative(href) else Path(href)


def _check_asset(key: str, asset: dict[str, Any], where: str, base: Path) -> list[str]:
    href = asset.get("href", "")
    path = _local_file(href, base)
    if path is None:
        return []
    if not path.is_file():
        return [f"{where}: asset '{key}' href {href} does not resolve to a file ({path})"]
    problems = []
    size = asset.get("file:size")
    if size is not None and size != path.stat().st_size:
        problems.append(
            f"{where}: asset '{key}' file:size is {size} but {path.name} has {path.stat().st_size} bytes"
        )
    checksum = asset.get("file:checksum")
    if isinstance(checksum, str):
        if not checksum.startswith(SHA256_MULTIHASH_PREFIX):
            problems.append(
                f"{where}: asset '{key}' file:checksum {checksum[:8]}… is not a sha2-256 multihash "
                f"(must start with {SHA256_MULTIHASH_PREFIX}); cannot verify it"
            )
        elif sha256_multihash(path) != checksum:
            problems.append(
                f"{where}: asset '{key}' file:checksum does not match the contents of {path.name}"
            )
    is_cog = COG_MEDIA_TYPE_MARK in str(asset.get("type", "")) or key == "change"
    if is_cog:
        try:
            valid, errors, warnings = cog_validate(path, strict=True, quiet=True)
        except (RasterioError, OSError, ValueError) as exc:
            valid, errors, warnings = False, [f"cannot open it as a raster ({exc})"], []
        if not valid:
            details = "; ".join([*errors, *warnings]) or "not a valid COG"
            problems.append(
                f"{where}: asset '{key}' {path.name} is not a valid Cloud-Optimized GeoTIFF: {details}"
            )
    return problems


def validate_catalog(root: Path, schemas_dir: Path | None = None) -> list[str]:
    """Every problem of the catalog at ``root``, one line each; empty when it is valid."""
    root = Path(root).resolve()
    if schemas_dir is not None and not Path(schemas_dir).is_dir():
        raise OutputError(
            f"schemas folder {schemas_dir} does not exist; give a folder of <ext>/<version>/schema.json"
        )
    validator = LocalSchemaValidator(schemas_dir)
    problems: list[str] = []
    seen: set[Path] = set()
    todo = [root / CATALOG_FILE]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        where = path.relative_to(root).as_posix() if root in path.parents else str(path)
        if not path.is_file():
            problems.append(f"{where}: missing")
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{where}: cannot read JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"{where}: expected a JSON object, found {type(doc).__name__}")
            continue
        problems.extend(_check_schemas(doc, where, validator))
        links, assets = doc.get("links"), doc.get("assets")
        # Malformed links or assets are reported by the schema checks above; only sound ones are followed.
        for link in links if isinstance(links, list) else []:
            href = link.get("href") if isinstance(link, dict) else None
            if not isinstance(href, str):
                continue
            target = _local_file(href, path) if is_local_relative(href) else None
            if target is None:
                continue
            if link.get("rel") in CHILD_RELS and target.is_file():
                todo.append(target)
            elif not target.is_file():
                problems.append(f"{where}: link rel={link.get('rel')} href {href} does not resolve to a file")
        for key, asset in (assets if isinstance(assets, dict) else {}).items():
            if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                problems.extend(_check_asset(key, asset, where, path))
    return problems + integrity_problems(root)
