"""changecat's own STAC extension (``change:`` fields): its identifier and the local copy of its schema."""

from __future__ import annotations

from pathlib import Path

from generator.config import schemas_dir

CHANGE_EXTENSION = "https://changecat.github.io/schemas/change/v1.0.0/schema.json"
"""The extension's identifier, the ``$id`` of ``schemas/change/v1.0.0/schema.json`` (without the '#')."""


def own_schemas() -> dict[str, Path]:
    """Identifier → local schema file of every STAC extension the project defines."""
    return {CHANGE_EXTENSION: schemas_dir() / "change" / "v1.0.0" / "schema.json"}
