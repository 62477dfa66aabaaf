"""The year of largest change: per pixel, the later year of the consecutive pair of years whose change is the
largest, and that change. Streaming: windows are taken in chunks, each consecutive pair's change is
computed on the chunk by the source, and folded into a running maximum held for that chunk only.

Ties: pairs are folded in ascending order and a later pair replaces the running maximum only when it is
strictly larger, so on equal changes the earliest pair wins. A pair that is nodata (NaN) at a pixel (either
of its years has no data there) is skipped at that pixel; a pixel nodata in every pair stays nodata
(year 0, magnitude NaN). Pairs are never bridged over a missing year: a pixel nodata in 2019 gets no
2018→2020 change, only the pairs it has.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from shapely.geometry import mapping

from generator.grid import Grid
from generator.plan import Region, area_id
from generator.product import Stats
from generator.sources.base import Block, SourceInfo

YEAR_NODATA = 0
"""Nodata of the ``year`` raster (uint16): no year has a pair with data at the pixel."""
YEAR_DTYPE = "uint16"
MAGNITUDE_DTYPE = "float32"

CHUNK_PIXELS = 16 * 1024 * 1024
"""Pixels of the windows computed together: the running maximum of a chunk holds 6 bytes a pixel (year
uint16 + change float32), so about 100 MB, whatever the grid or the number of years. A larger chunk keeps
a parallel source busier; a smaller one bounds memory tighter."""

TIMELINE_SUFFIX = "timeline"
"""Item ids end in ``_timeline``; the collection id is the dataset's collection id + ``-timeline``."""


@dataclass(frozen=True)
class TimelineJob:
    """One timeline product: a region and method over a series of years (ascending, at least two)."""

    region: Region
    years: tuple[int, ...]
    method: str
    grid: Grid = field(compare=False)
    quicklook_threshold: float | None = field(default=None, compare=False)
    """Changes below it are drawn grey in the quicklook (their year means little); the hotspot threshold."""
    tile: str | None = None  # as ``Job.tile``: one tile of a large region (``region.geometry`` its part)

    @property
    def from_year(self) -> int:
        return self.years[0]

    @property
    def to_year(self) -> int:
        return self.years[-1]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The consecutive pairs of years, in ascending order (the order they are folded in)."""
        return list(itertools.pairwise(self.years))

    @property
    def item_id(self) -> str:
        years = f"{self.from_year}_{self.to_year}"
        return f"{area_id(self.region.id, self.tile)}_{years}_{self.method}_{TIMELINE_SUFFIX}"

    def fingerprint(self, source_identity: str, software_version: str) -> str:
        """A hash of everything that determines the product, to skip finished work on a re-run."""
        spec = {
            "kind": TIMELINE_SUFFIX,
            "region": mapping(self.region.geometry),
            "title": self.region.title,
            "years": list(self.years),
            "method": self.method,
            "grid": [self.grid.crs, list(self.grid.transform)[:6], self.grid.width, self.grid.height],
            "source": source_identity,
            "software": software_version,
        }
        if self.tile is not None:
            spec["tile"] = self.tile
        if self.quicklook_threshold is not None:
            spec["quicklook_threshold"] = self.quicklook_threshold
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class TimelineProduct:
    """A finished timeline product on disk: the ``year`` and ``magnitude`` COGs, the categorical quicklook
    (thumbnail, overview) and its legend, all in one folder."""

    job: TimelineJob
    source: SourceInfo
    year_path: Path
    magnitude_path: Path
    thumbnail_path: Path
    legend_path: Path
    stats: Stats  # of the magnitude (the largest change), valid pixels only
    year_counts: dict[int, int]  # pixels per year of largest change (every later year of a pair, maybe 0)
    expression: str  # the method's formula
    software_version: str
    created: datetime  # timezone-aware UTC
    fingerprint: str
    requests: int | None = None  # metered requests made for it; None for an unmetered source

    @property
    def files(self) -> list[Path]:
        return [self.year_path, self.magnitude_path, self.thumbnail_path, self.legend_path]


def timeline_years(pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    """The years of a timeline: every year the config's resolved pairs name, ascending (consecutive
    pairs → all available years; explicit pairs → the years they list)."""
    return tuple(sorted({y for pair in pairs for y in pair}))


def fold(year: np.ndarray, magnitude: np.ndarray, later_year: int, change: np.ndarray) -> None:
    """Fold one pair's change into the running maximum (in place): where ``change`` is larger than the
    maximum so far, or the maximum is still nodata, take it and ``later_year``. NaN change is skipped."""
    take = np.isfinite(change) & ~(change <= magnitude)  # NaN magnitude compares False: taken
    magnitude[take] = change[take]
    year[take] = later_year


def empty_best(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A running maximum with nothing folded in yet: year 0 (nodata), magnitude NaN."""
    return np.full(shape, YEAR_NODATA, dtype=YEAR_DTYPE), np.full(shape, np.nan, dtype=MAGNITUDE_DTYPE)


def chunks(windows: list[Window], max_pixels: int = CHUNK_PIXELS) -> Iterator[list[Window]]:
    """Consecutive runs of windows of at most ``max_pixels`` pixels (at least one window each)."""
    chunk: list[Window] = []
    pixels = 0
    for w in windows:
        size = int(w.width) * int(w.height)
        if chunk and pixels + size > max_pixels:
            yield chunk
            chunk, pixels = [], 0
        chunk.append(w)
        pixels += size
    if chunk:
        yield chunk


def _containing(chunk: list[Window], window: Window) -> Window:
    """The window of the chunk that holds ``window`` (a source may yield a window split in parts)."""
    for w in chunk:
        if (
            w.row_off <= window.row_off
            and w.col_off <= window.col_off
            and window.row_off + window.height <= w.row_off + w.height
            and window.col_off + window.width <= w.col_off + w.width
        ):
            return w
    raise ValueError(f"the source yielded window {window}, which lies in no window it was asked for")


PairBlocks = Callable[[Grid, int, int, str, list[Window]], Iterator[Block]]
"""``Source.compute``'s signature: one pair's change on some windows (possibly masked by the caller)."""


def largest_change(
    compute: PairBlocks,
    grid: Grid,
    years: tuple[int, ...],
    method: str,
    windows: list[Window],
    max_pixels: int = CHUNK_PIXELS,
    on_block: Callable[[], None] | None = None,
) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
    """Yield (window, year uint16, magnitude float32) of every window: for each chunk of windows, every
    consecutive pair's change is computed on the chunk and folded per pixel. Memory: one chunk's running
    maximum plus what the source holds for one pair."""
    for chunk in chunks(windows, max_pixels):
        best = {(w.row_off, w.col_off): empty_best((int(w.height), int(w.width))) for w in chunk}
        for a, b in itertools.pairwise(years):
            for window, change in compute(grid, a, b, method, chunk):
                outer = _containing(chunk, window)
                year, magnitude = best[(outer.row_off, outer.col_off)]
                r0, c0 = int(window.row_off - outer.row_off), int(window.col_off - outer.col_off)
                rows, cols = slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))
                fold(year[rows, cols], magnitude[rows, cols], b, change)
                if on_block is not None:
                    on_block()
        for w in chunk:
            year, magnitude = best.pop((w.row_off, w.col_off))
            yield w, year, magnitude
