"""The interface every embedding source implements. A source knows nothing of STAC."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from generator.errors import SourceError
from generator.grid import Grid
from generator.preview import PreviewCollector, PreviewPlan

if TYPE_CHECKING:
    from generator.cluster import Executor

AEF_DATASET = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"


@dataclass(frozen=True)
class SourceInfo:
    """Provenance of a source, safe to publish: no credentials, no signed query strings."""

    kind: str  # "aef" | "earthengine"
    dataset: str  # e.g. AEF_DATASET
    location: str  # root URL/folder of the mirror, or the Earth Engine collection id
    derived_from: list[str] = field(default_factory=list)  # hrefs of the inputs (dataset page, index...)
    version: str = ""  # the dataset release as the source reports it (EE collection version, index ETag...)


@dataclass(frozen=True)
class Cost:
    """What computing some windows costs a source, known before any pixel is read: file blocks and their
    compressed bytes (a mirror of files), metered requests and their pixels (Earth Engine). ``exact`` is
    False where the source could only estimate (see the source's ``cost``)."""

    blocks: int = 0
    bytes: int = 0
    requests: int = 0
    pixels: int = 0
    exact: bool = True

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.blocks + other.blocks,
            self.bytes + other.bytes,
            self.requests + other.requests,
            self.pixels + other.pixels,
            self.exact and other.exact,
        )


Block = tuple[Window, np.ndarray]
"""A window of the output grid and its values: float32 change (NaN where either year has no data), or
for context composites (bands, rows, cols)."""


class Source(ABC):
    """Computes change on an output grid, block by block, streaming."""

    executor: Executor | None = None
    """Where ``compute`` runs its units: None = the source's own threads (see ``use_executor``)."""

    @property
    @abstractmethod
    def info(self) -> SourceInfo: ...

    @abstractmethod
    def years(self) -> list[int]:
        """Years the source holds, ascending, read from the source itself."""

    def grid_origin(self, crs: str) -> tuple[float, float]:
        """A point on the pixel-edge lattice of the source's tiles in ``crs`` (default: multiples of 10 m)."""
        return (0.0, 0.0)

    @abstractmethod
    def has_data(self, geometry_wgs84: BaseGeometry, year: int) -> bool:
        """Whether any source tile/image of ``year`` intersects the geometry."""

    @abstractmethod
    def windows(self, grid: Grid) -> list[Window]:
        """The blocks this source computes the grid in (its natural tile size)."""

    @abstractmethod
    def compute(
        self,
        grid: Grid,
        from_year: int,
        to_year: int,
        method: str,
        windows: list[Window],
        preview: PreviewCollector | None = None,
    ) -> Iterator[Block]:
        """Yield the change of each window (any order, possibly computed in parallel). With ``preview``
        (embedding methods), also fill its years' embedding pictures (``generator.preview``) from what
        the computation reads, or with one small request per year; by the end of the iteration."""

    def coverage(self, geometry_wgs84: BaseGeometry, year: int) -> BaseGeometry:
        """The part of the geometry (WGS84) that the source's tiles/images of ``year`` cover, from their
        footprints (no pixel read). By default all of it when the source has data there, else nothing."""
        return geometry_wgs84 if self.has_data(geometry_wgs84, year) else Polygon()

    def cost(self, grid: Grid, from_year: int, to_year: int, windows: list[Window]) -> Cost:
        """What ``compute`` of these windows will read or request, from the source's headers and index
        only. By default nothing is known (a zero cost)."""
        return Cost(exact=False)

    def content_id(self) -> str:
        """What identifies the data the source holds now, beyond its location (e.g. a checksum of its
        index): recorded in every product's fingerprint, so changed source data means a new product.
        By default the dataset release the source reports in its provenance (``SourceInfo.version``,
        e.g. an Earth Engine collection's ``system:version``, where the source records one); empty when
        the source cannot tell cheaply."""
        return str(getattr(self.info, "version", "") or "")

    def version_of(self, dataset: str) -> str:
        """The release of another dataset a method of this source reads (e.g. Sentinel-2), "" if unknown."""
        return ""

    def request_count(self) -> int | None:
        """Requests made so far to a metered service (Earth Engine's computePixels); None for a source
        that meters nothing. The pipeline prints an estimate before a run and records the count per item."""
        return None

    def preview_cost(self, plan: PreviewPlan) -> Cost:
        """What one year's embedding picture costs beyond ``compute``: nothing by default (made from the
        stacks ``compute`` reads); a source that requests it separately says so."""
        return Cost()

    def progress(self) -> str:
        """A short note for the progress bar (e.g. bytes downloaded); empty when there is nothing to add."""
        return ""

    def context_windows(self, grid: Grid) -> list[Window]:
        """The blocks this source downloads Sentinel-2 context composites in."""
        raise SourceError(f"the {self.info.kind} source has no Sentinel-2 context composites")

    def context(self, grid: Grid, year: int, windows: list[Window]) -> Iterator[Block]:
        """Yield the year's cloud-masked median Sentinel-2 RGB composite: (3, rows, cols) uint16 DN of
        B4, B3, B2, 0 = no clear observation. Only sources that can reach Sentinel-2 implement it."""
        raise SourceError(f"the {self.info.kind} source has no Sentinel-2 context composites")

    def use_executor(self, executor: Executor) -> None:
        """Run the units of ``compute`` (and ``context``) on ``executor`` (a dask cluster with
        ``--scheduler``); by default a source uses threads of this process."""
        self.executor = executor

    def prefetch(  # noqa: B027 - optional hook, only sources that overlap jobs on a cluster implement it
        self, grid: Grid, from_year: int, to_year: int, method: str, windows: list[Window]
    ) -> None:
        """Start a later job's units now, so the cluster works on them while this process writes the
        current job; ``compute`` with the same arguments takes them up. Does nothing by default."""

    def worker_check(self) -> Callable[[], None] | None:
        """A picklable function that opens the source on a cluster worker, raising a SourceError naming
        the worker and the source when it cannot; None for a source that needs nothing on the workers."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing open
        """Release open files/sessions."""
