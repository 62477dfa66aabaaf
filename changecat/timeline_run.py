"""Timeline products in a run (config ``timeline: true``): plan them like change products (fingerprint,
up-to-date check), compute each streaming (``generator.timeline``), write the COGs, quicklook and legend in
a staging folder and commit them through the catalog store (``catalog.timeline.commit_timeline``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from catalog.integrity import STAGING_PREFIX
from catalog.layout import item_json
from catalog.store import CatalogStore
from catalog.testhook import hold
from catalog.timeline import commit_timeline, timeline_collection_id, timeline_required
from changecat import __version__
from changecat.pipeline import (
    JobOutcome,
    Reporter,
    SilentReporter,
    _inside,
    mask_outside,
    product_info,
    run_staged,
    stale_reason,
)
from generator.config import Config
from generator.errors import ConfigError, NoDataError
from generator.grid import Grid, to_crs
from generator.hotspots import DEFAULT_THRESHOLDS
from generator.methods import EMBEDDING_METHODS, METHODS
from generator.plan import described, make_jobs
from generator.quicklook import category_palette, write_categorical_quicklook
from generator.raster import CogWriter
from generator.sources.base import Block, Source
from generator.stats import StatsAccumulator
from generator.timeline import (
    CHUNK_PIXELS,
    YEAR_DTYPE,
    YEAR_NODATA,
    TimelineJob,
    TimelineProduct,
    largest_change,
    timeline_years,
)

YEAR_NAME = "year.tif"
MAGNITUDE_NAME = "magnitude.tif"
THUMBNAIL_NAME = "thumbnail.png"
YEAR_OVERVIEW_RESAMPLING = Resampling.mode
"""Overviews of the categorical year raster: the most frequent year of the pixels each one covers (an
average of 2019 and 2024 would be a year that never changed most)."""


@dataclass(frozen=True)
class TimelinePlan:
    job: TimelineJob
    collection: str
    fingerprint: str
    reason: str | None  # why the product must be made; None when it is up to date


def timeline_jobs(config: Config, source: Source) -> list[TimelineJob]:
    """One job per region and embedding method of the config, over the years its pairs name (resolved
    against the source's years); none unless the config asks for ``timeline``."""
    if not config.timeline:
        return []
    years = timeline_years(config.pairs.resolve(source.years()))
    if len(years) < 2:
        raise ConfigError(f"{config.path}: timeline: needs at least two years; the pairs give {list(years)}")
    methods = tuple(m for m in config.methods if m in EMBEDDING_METHODS)
    jobs = make_jobs(config.regions, [(years[0], years[-1])], methods, source.grid_origin, config.tiling)
    return [
        TimelineJob(
            job.region, years, job.method, job.grid, config.hotspots.params(job.method).threshold, job.tile
        )
        for job in jobs
    ]


def timeline_requests(jobs: list[TimelineJob], source: Source) -> tuple[int, int]:
    """(requests, pixels) the timeline jobs ask a metered source for: every window inside the region, once
    per consecutive pair (a lower bound when tiles are split or retried)."""
    requests = pixels = 0
    for job in jobs:
        region = to_crs(job.region.geometry, "EPSG:4326", job.grid.crs)
        windows = _inside(source.windows(job.grid), region, job.grid)
        requests += len(windows) * len(job.pairs)
        pixels += sum(int(w.width) * int(w.height) for w in windows) * len(job.pairs)
    return requests, pixels


def plan_timelines(
    config: Config, source: Source, root: Path, identity: str, force: bool
) -> list[TimelinePlan]:
    """Each timeline job with its fingerprint and why it must be made (None: up to date)."""
    plans = []
    for job in timeline_jobs(config, source):
        fingerprint = job.fingerprint(identity, __version__)
        coll = timeline_collection_id(product_info(source, job.method).dataset)
        path = item_json(root, coll, job.item_id)
        reason = "forced" if force else stale_reason(path, fingerprint, list(timeline_required()))
        plans.append(TimelinePlan(job, coll, fingerprint, reason))
    return plans


def run_timeline(plan: TimelinePlan, source: Source, store: CatalogStore, reporter: Reporter) -> JobOutcome:
    """Make and commit one timeline product unless it is up to date; failures are reported, not raised."""

    def make(staging: Path) -> None:
        product = make_timeline(plan.job, source, staging, plan.fingerprint, reporter)
        hold("staged")
        commit_timeline(store, product, staging)

    return run_staged(plan, store, reporter, make)


def make_timeline(
    job: TimelineJob,
    source: Source,
    out_dir: Path,
    fingerprint: str = "",
    reporter: Reporter | None = None,
    chunk_pixels: int = CHUNK_PIXELS,
) -> TimelineProduct:
    """Compute one timeline into ``out_dir``: ``year.tif`` (uint16, 0 = nodata), ``magnitude.tif``
    (float32, NaN = nodata), the categorical quicklook and its legend. Raises ``NoDataError`` when a year
    has no data for the region or no pixel has a pair with data; nothing is left half-written then."""
    reporter = reporter or SilentReporter()
    requests_before = source.request_count()
    for year in job.years:
        if not source.has_data(job.region.geometry, year):
            raise NoDataError(
                f"{described(job.region.id, job.tile)} has no data in {source.info.location} for {year}: "
                "check the region's coordinates against the source's coverage, or list the years in pairs"
            )
    method = METHODS[job.method]
    grid = job.grid
    region = to_crs(job.region.geometry, "EPSG:4326", grid.crs)
    windows = _inside(source.windows(grid), region, grid)
    stats = StatsAccumulator(method.value_range, grid.pixel_area_m2, grid.width * grid.height)
    counts: Counter[int] = Counter()
    reporter.job_started(job, len(windows) * len(job.pairs))  # type: ignore[arg-type]

    def compute(g: Grid, a: int, b: int, m: str, ws: list[Window]) -> Iterator[Block]:
        return mask_outside(source.compute(g, a, b, m, ws), region, g)

    def on_block() -> None:
        hold("computing")
        reporter.block_done(job, source.progress())  # type: ignore[arg-type]

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    later = [b for _, b in job.pairs]
    try:
        with (
            CogWriter(
                staging / YEAR_NAME,
                grid,
                dtype=YEAR_DTYPE,
                nodata=YEAR_NODATA,
                resampling=YEAR_OVERVIEW_RESAMPLING,
            ) as years_out,
            CogWriter(staging / MAGNITUDE_NAME, grid) as magnitude_out,
        ):
            for window, year, magnitude in largest_change(
                compute, grid, job.years, job.method, windows, chunk_pixels, on_block
            ):
                years_out.write(window, year)
                magnitude_out.write(window, magnitude)
                stats.update(magnitude)
                values, n = np.unique(year[year != YEAR_NODATA], return_counts=True)
                counts.update(dict(zip(values.tolist(), n.tolist(), strict=True)))
            if stats.count == 0:
                raise NoDataError(
                    f"{described(job.region.id, job.tile)} has no valid pixel for {job.from_year}–"
                    f"{job.to_year}: every pixel is nodata in at least one year of every pair"
                )
        labels = {b: f"{a}-{b}" for a, b in job.pairs}
        threshold = job.quicklook_threshold or DEFAULT_THRESHOLDS[job.method]
        weak = (staging / MAGNITUDE_NAME, threshold, f"change < {threshold:.2g}")
        legend = write_categorical_quicklook(
            staging / YEAR_NAME, staging / THUMBNAIL_NAME, category_palette(later), labels, weak
        )
        names = [p.name for p in staging.iterdir()]
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
    return TimelineProduct(
        job=job,
        source=product_info(source, job.method),
        year_path=out_dir / YEAR_NAME,
        magnitude_path=out_dir / MAGNITUDE_NAME,
        thumbnail_path=out_dir / THUMBNAIL_NAME,
        legend_path=out_dir / legend.name,
        stats=stats.result(),
        year_counts={b: int(counts.get(b, 0)) for b in later},
        expression=method.expression,
        software_version=__version__,
        created=datetime.now(UTC),
        fingerprint=fingerprint,
        requests=None if requests_before is None else (source.request_count() or 0) - requests_before,
    )
