"""Jobs to run: region × year pair × method, each with its output grid. Built from a validated config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from generator.grid import Grid


@dataclass(frozen=True)
class Region:
    """A validated region: ``id`` matches ``REGION_ID_PATTERN``; ``geometry`` is a valid WGS84 (Multi)Polygon."""

    id: str
    title: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class Job:
    """One product to make. ``grid`` is the output grid of the region (same for all its pairs and methods)."""

    region: Region
    from_year: int
    to_year: int
    method: str
    grid: Grid = field(compare=False)

    @property
    def item_id(self) -> str:
        return f"{self.region.id}_{self.from_year}_{self.to_year}_{self.method}"

    def fingerprint(self, source_identity: str, software_version: str) -> str:
        """A hash of everything that determines the product, to skip finished work on a re-run."""
        spec = {
            "region": mapping(self.region.geometry),
            "years": [self.from_year, self.to_year],
            "method": self.method,
            "grid": [self.grid.crs, list(self.grid.transform)[:6], self.grid.width, self.grid.height],
            "source": source_identity,
            "software": software_version,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
