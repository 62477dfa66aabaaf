"""A job's embedding pictures (``generator.preview``): which years to ask the source for, which to reuse
from earlier jobs of the run, and writing them beside the change COG."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from generator.errors import SourceError
from generator.grid import Grid
from generator.methods import EMBEDDING_METHODS
from generator.plan import Job
from generator.preview import (
    ASSET_PREFIX,
    PreviewCollector,
    preview_name,
    preview_plan,
    region_mask,
    write_preview,
)
from generator.sources.base import Cost, Source

PreviewCache = dict[tuple[str, Grid, int], Path]
"""Embedding pictures already written in this run, by (region id, grid, year): the other jobs of a region's
grid (or tile) copy them instead of asking the source again (one Earth Engine request per year)."""


@dataclass
class JobPreviews:
    """The pictures one job makes: ``collector`` for the years the source fills during ``compute``,
    ``reuse`` for those copied from earlier jobs."""

    collector: PreviewCollector
    reuse: dict[int, Path] = field(default_factory=dict)

    @property
    def years(self) -> list[int]:
        return sorted({*self.collector.values, *self.reuse})

    def wanted(self) -> PreviewCollector | None:
        """What to hand the source's ``compute``: None when every year is reused."""
        return self.collector if self.collector.values else None


def begin(job: Job, cache: PreviewCache | None) -> JobPreviews | None:
    """The job's pictures, or None for a method that does not read the embeddings (``s2-difference``)."""
    if job.method not in EMBEDDING_METHODS:
        return None
    cache = cache or {}
    years = (job.from_year, job.to_year)
    known = {y: cache.get((job.region.id, job.grid, y)) for y in years}
    reuse = {y: p for y, p in known.items() if p is not None and p.is_file()}
    return JobPreviews(PreviewCollector(preview_plan(job.grid), [y for y in years if y not in reuse]), reuse)


def finish(previews: JobPreviews, job: Job, region: BaseGeometry, folder: Path) -> dict[str, Path]:
    """Write (or copy) the pictures into ``folder``; asset key → path. ``region`` in the grid's CRS."""
    missing = previews.collector.missing()
    if missing:
        raise SourceError(
            f"the source made no embedding picture of {', '.join(map(str, missing))} for {job.item_id}"
        )
    inside = region_mask(previews.collector.plan, region)
    out = {}
    for year in previews.years:
        path = folder / preview_name(year)
        if year in previews.reuse:
            shutil.copyfile(previews.reuse[year], path)
        else:
            write_preview(path, previews.collector.values[year], inside)
        out[f"{ASSET_PREFIX}{year}"] = path
    return out


def remember(cache: PreviewCache | None, job: Job, pictures: dict[str, Path]) -> None:
    """Record a committed product's pictures for the region's later jobs."""
    if cache is not None:
        cache.update(
            {(job.region.id, job.grid, int(k.removeprefix(ASSET_PREFIX))): p for k, p in pictures.items()}
        )


def picture_cost(job: Job, source: Source, seen: set[tuple[str, Grid, int]]) -> Cost:
    """What a job's pictures cost the source beyond its change (``Source.preview_cost``: one Earth Engine
    request a year), counting each region's year once (``seen``), as the run reuses them."""
    total = Cost()
    for year in (job.from_year, job.to_year) if job.method in EMBEDDING_METHODS else ():
        if (job.region.id, job.grid, year) not in seen:
            seen.add((job.region.id, job.grid, year))
            total += source.preview_cost(preview_plan(job.grid))
    return total


def required_assets(job: Job) -> list[str]:
    """The picture assets a product of ``job`` must have to count as up to date."""
    if job.method not in EMBEDDING_METHODS:
        return []
    return [f"{ASSET_PREFIX}{y}" for y in (job.from_year, job.to_year)]
