"""One run: config → jobs → products (COG, stats, quicklook) → catalog; the layer that wires the parts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from rasterio.features import geometry_mask
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from catalog.layout import collection_id, item_dir
from catalog.store import load_fingerprints, save_catalog
from changecat import __version__
from generator.config import Config
from generator.errors import ChangecatError, ConfigError, NoDataError
from generator.grid import Grid, to_crs
from generator.methods import METHODS
from generator.plan import Job, check_years, make_jobs
from generator.product import Product
from generator.quicklook import write_quicklook
from generator.raster import CogWriter
from generator.sources import open_source
from generator.sources.base import Block, Source
from generator.stats import StatsAccumulator

COG_NAME = "change.tif"
THUMBNAIL_NAME = "thumbnail.png"


class Reporter(Protocol):
    """Progress callbacks; the CLI draws bars from them, tests record them."""

    def run_started(self, jobs: list[Job]) -> None: ...
    def job_started(self, job: Job, blocks: int) -> None: ...
    def block_done(self, job: Job) -> None: ...
    def job_finished(self, outcome: JobOutcome) -> None: ...


class SilentReporter:
    def run_started(self, jobs: list[Job]) -> None:
        pass

    def job_started(self, job: Job, blocks: int) -> None:
        pass

    def block_done(self, job: Job) -> None:
        pass

    def job_finished(self, outcome: JobOutcome) -> None:
        pass


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    status: Literal["done", "skipped", "failed"]
    error: str | None = None
    product: Product | None = None


def run(config: Config, reporter: Reporter | None = None, force: bool = False) -> list[JobOutcome]:
    """Make every product the config asks for; failed jobs are reported, not raised.

    Finished products whose inputs have not changed are skipped unless ``force``. The catalog is saved
    after each product, so an interrupted run keeps what it finished.
    """
    reporter = reporter or SilentReporter()
    source = open_source(config.source)
    try:
        available = source.years()
        check_years(config.pairs.years(), available, source.info.location)
        pairs = config.pairs.resolve(available)
        if not pairs:
            raise ConfigError(
                f"{config.path}: pairs: no year pair to compute from the available years {available}"
            )
        jobs = make_jobs(config.regions, pairs, config.methods, source.grid_origin)
        reporter.run_started(jobs)
        coll = collection_id(source.info.dataset)
        done = {} if force else load_fingerprints(config.catalog.output)
        outcomes = []
        for job in jobs:
            outcome = _run_one(job, source, config, coll, done, reporter)
            reporter.job_finished(outcome)
            outcomes.append(outcome)
        return outcomes
    finally:
        source.close()


def _run_one(
    job: Job, source: Source, config: Config, coll: str, done: dict[str, str], reporter: Reporter
) -> JobOutcome:
    fingerprint = job.fingerprint(_source_identity(source), __version__)
    if done.get(job.item_id) == fingerprint:
        return JobOutcome(job, "skipped")
    try:
        out_dir = item_dir(config.catalog.output, coll, job.item_id)
        product = make_product(job, source, out_dir, fingerprint, reporter)
        save_catalog(
            config.catalog.output,
            catalog_id=config.catalog.id,
            title=config.catalog.title,
            description=config.catalog.description,
            products=[product],
        )
    except ChangecatError as exc:
        return JobOutcome(job, "failed", error=str(exc))
    return JobOutcome(job, "done", product=product)


def _source_identity(source: Source) -> str:
    info = source.info
    return f"{info.kind}:{info.dataset}:{info.location}"


def make_product(
    job: Job, source: Source, out_dir: Path, fingerprint: str = "", reporter: Reporter | None = None
) -> Product:
    """Compute one job into ``out_dir`` (COG + quicklook) and return its Product.

    Raises ``NoDataError`` when the region has no data for a year or no valid pixel; nothing is left
    half-written then.
    """
    reporter = reporter or SilentReporter()
    for year in (job.from_year, job.to_year):
        if not source.has_data(job.region.geometry, year):
            raise NoDataError(
                f"region '{job.region.id}' has no data in {source.info.location} for {year}: "
                "check the region's coordinates against the source's coverage"
            )
    method = METHODS[job.method]
    grid = job.grid
    region = to_crs(job.region.geometry, "EPSG:4326", grid.crs)
    windows = [w for w in source.windows(grid) if region.intersects(box(*grid.window_bounds(w)))]
    stats = StatsAccumulator(method.value_range, grid.pixel_area_m2, grid.width * grid.height)
    reporter.job_started(job, len(windows))
    out_dir.mkdir(parents=True, exist_ok=True)
    cog_path, thumbnail_path = out_dir / COG_NAME, out_dir / THUMBNAIL_NAME
    with CogWriter(cog_path, grid) as writer:
        blocks = source.compute(grid, job.from_year, job.to_year, job.method, windows)
        for window, values in mask_outside(blocks, region, grid):
            writer.write(window, values)
            stats.update(values)
            reporter.block_done(job)
        if stats.count == 0:
            raise NoDataError(
                f"region '{job.region.id}' has no valid pixel for {job.from_year}→{job.to_year}: "
                "every pixel is nodata in at least one of the two years"
            )
    write_quicklook(cog_path, thumbnail_path)
    return Product(
        job=job,
        source=source.info,
        cog_path=cog_path,
        thumbnail_path=thumbnail_path,
        stats=stats.result(),
        expression=method.expression,
        software_version=__version__,
        created=datetime.now(UTC),
        fingerprint=fingerprint,
    )


def mask_outside(blocks: Iterator[Block], region: BaseGeometry, grid: Grid) -> Iterator[Block]:
    """Set pixels whose centre lies outside the region (in the grid's CRS) to NaN."""
    for window, values in blocks:
        outside = geometry_mask(
            [region], out_shape=values.shape, transform=grid.window_transform(window), all_touched=False
        )
        yield window, np.where(outside, np.float32(np.nan), values).astype(np.float32, copy=False)
