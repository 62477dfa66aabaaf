"""changecat's own STAC extension (``change:`` fields): its identifier and the local copy of its schema,
and the official extension schemas the project vendors (``schemas/vendor/``) for offline validation."""

from __future__ import annotations

from pathlib import Path

from generator.config import schemas_dir

CHANGE_EXTENSION = "https://changecat.github.io/schemas/change/v1.0.0/schema.json"
"""The extension's identifier, the ``$id`` of ``schemas/change/v1.0.0/schema.json`` (without the '#')."""

VENDORED_EXTENSIONS = {
    "https://stac-extensions.github.io/classification/v2.0.0/schema.json": (
        "classification/v2.0.0/schema.json"
    ),
}
"""Official extension schemas kept in ``schemas/vendor/`` (sources in its README): timeline items declare
classification v2.0.0, which the shared offline copies lack."""


def own_schemas() -> dict[str, Path]:
    """Identifier → local schema file of every STAC extension the project defines or vendors."""
    vendor = schemas_dir() / "vendor"
    return {
        CHANGE_EXTENSION: schemas_dir() / "change" / "v1.0.0" / "schema.json",
        **{uri: vendor / rel for uri, rel in VENDORED_EXTENSIONS.items()},
    }
