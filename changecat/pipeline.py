"""One run: config → jobs → products (COG, stats, quicklook) → catalog; the layer that wires the parts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import shapely
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from catalog.agree import disagreement
from catalog.build import CHANGE_ASSET, THUMBNAIL_ASSET
from catalog.files import read_json
from catalog.hotspots import HOTSPOTS_ASSET, HOTSPOTS_NAME, write_hotspots
from catalog.integrity import STAGING_PREFIX, leftovers, remove_leftovers
from catalog.layout import CATALOG_FILE, collection_id, item_json
from catalog.lock import RunPresence, write_lock
from catalog.prune import prune_candidates, remove_products
from catalog.store import CatalogStore
from catalog.testhook import hold
from changecat import __version__, embedding_context
from changecat.cost import coverage_warning, estimate_requests, job_windows, pair_coverage
from changecat.cost import windows_inside as _inside
from changecat.run_executor import attach, prefetch_next
from generator.config import Config, SourceConfig
from generator.errors import ChangecatError, ConfigError, NoDataError, OutputError
from generator.grid import Grid, to_crs
from generator.hotspots import (
    DEFAULT_THRESHOLDS,
    Hotspot,
    HotspotAccumulator,
    HotspotParams,
    hotspot_rows,
)
from generator.methods import METHODS
from generator.plan import Job, check_years, make_jobs
from generator.product import CONTEXT_PREFIX, HotspotSummary, Product
from generator.quicklook import write_quicklook
from generator.raster import CogWriter
from generator.sources import open_source
from generator.sources.base import Block, Source, SourceInfo
from generator.stats import StatsAccumulator

if TYPE_CHECKING:
    from changecat.timeline_run import TimelinePlan  # it imports this module

COG_NAME = "change.tif"
THUMBNAIL_NAME = "thumbnail.png"
ContextCache = dict[tuple[str, int], Path]
"""Sentinel-2 composites already written in this run, by (``Job.area_id``, year): one per grid."""


class Reporter(Protocol):
    """Progress callbacks; the CLI draws bars from them, tests record them."""

    def run_started(self, jobs: list[Job]) -> None: ...
    def run_estimate(self, requests: int, pixels: int) -> None: ...
    def job_started(self, job: Job, blocks: int) -> None: ...
    def block_done(self, job: Job, detail: str = "") -> None: ...
    def job_finished(self, outcome: JobOutcome) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def run_started(self, jobs: list[Job]) -> None:
        pass

    def run_estimate(self, requests: int, pixels: int) -> None:
        pass

    def job_started(self, job: Job, blocks: int) -> None:
        pass

    def block_done(self, job: Job, detail: str = "") -> None:
        pass

    def job_finished(self, outcome: JobOutcome) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    status: Literal["done", "skipped", "failed"]
    error: str | None = None
    product: Product | None = None


def run(
    config: Config,
    reporter: Reporter | None = None,
    force: bool = False,
    adopt: bool = False,
    prune: bool = False,
    scheduler: str | None = None,
) -> list[JobOutcome]:
    """Make every product the config asks for; failed jobs are reported, not raised.

    Finished products whose inputs have not changed and whose files agree with their items are skipped
    unless ``force``. Each product is committed as soon as it is made, so an interrupted run keeps what it
    finished. With ``prune``, products the config no longer asks for are removed afterwards. With
    ``scheduler`` (see ``generator.cluster.parse_scheduler``) the units run on a dask cluster.
    """
    reporter = reporter or SilentReporter()
    note = _note_of(reporter)
    cat = config.catalog
    store = CatalogStore(
        cat.output, catalog_id=cat.id, title=cat.title, description=cat.description, adopt=adopt, note=note
    )
    store.check_owner()  # before anything is read or computed: a foreign catalog is refused untouched
    source = open_source(config.source)
    executor = None
    try:
        executor = attach(source, scheduler, note)
        jobs = plan_jobs(config, source)
        context: ContextCache | None = {} if getattr(config.source, "s2_context", False) else None
        identity = _source_identity(source) + (":s2-context" if context is not None else "")
        plans = [_plan(job, source, store.root, identity, force, context is not None) for job in jobs]
        from changecat.timeline_run import (
            plan_timelines,
            run_timeline,
            timeline_requests,
        )  # imports this module

        timelines = plan_timelines(config, source, store.root, identity, force)
        current = {}
        for plan in [*plans, *timelines]:
            if plan.reason is None:
                current.setdefault(plan.collection, []).append(plan.job.item_id)
        wanted = {p.job.item_id for p in [*plans, *timelines]}
        unwanted = prune_candidates(store.root, wanted) if prune else []
        work = any(p.reason for p in [*plans, *timelines]) or bool(unwanted) or store.needs_update(current)
        if work:
            store.check_writable()  # said once, before any job starts
        # Leftovers of interrupted runs are removed even when all is up to date (if the folder is writable).
        active = work or (bool(leftovers(store.root)) and store.writable())
        if source.request_count() is not None:  # metered: say what the run will ask for, before it starts
            todo = [p.job for p in plans if p.reason]
            requests, pixels = estimate_requests(todo, source, context is not None)
            more = timeline_requests([t.job for t in timelines if t.reason], source)
            reporter.run_estimate(requests + more[0], pixels + more[1])
        reporter.run_started([*jobs, *(t.job for t in timelines)])  # type: ignore[list-item]
        with RunSession(store.root, note, active=active):
            outcomes, previews = [], {}
            for i, plan in enumerate(plans):
                prefetch_next(source, plans[i:], lambda job: job_windows(job, source))
                outcome = _run_one(plan, source, store, reporter, context, previews)
                reporter.job_finished(outcome)
                outcomes.append(outcome)
            for timeline in timelines:
                outcome = run_timeline(timeline, source, store, reporter)
                reporter.job_finished(outcome)
                outcomes.append(outcome)
            exists = (store.root / CATALOG_FILE).is_file()
            if work and (current or exists) and store.needs_update(current):
                try:
                    store.link(list(current))  # up-to-date items a crash left unlinked; a new title
                except OSError as exc:  # e.g. a full disk: the catalog stays as it was, the run goes on
                    note(f"the catalog could not be updated: {exc}")
            if unwanted:
                remove_products(store, unwanted, note)
        return outcomes
    finally:
        source.close()
        if executor is not None:
            executor.close()


def prune(config: Config, dry_run: bool = False, note: Callable[[str], None] | None = None) -> list[Path]:
    """Remove (or with ``dry_run`` only list) the item folders of products the config no longer asks for."""
    note = note or (lambda message: None)
    cat = config.catalog
    store = CatalogStore(
        cat.output, catalog_id=cat.id, title=cat.title, description=cat.description, note=note
    )
    store.check_owner()
    source = open_source(config.source)
    try:
        from changecat.timeline_run import timeline_jobs  # it imports this module

        wanted = {job.item_id for job in plan_jobs(config, source)}
        wanted |= {job.item_id for job in timeline_jobs(config, source)}
    finally:
        source.close()
    unwanted = prune_candidates(store.root, wanted)
    if unwanted and not dry_run:
        store.check_writable()
        with RunSession(store.root, note, active=True):
            remove_products(store, unwanted, note)
    return [store.root / coll / item_id for coll, item_id in unwanted]


def source_years(source_config: SourceConfig) -> list[int] | None:
    """The years the configured source holds, or None when it cannot be opened (for config messages)."""
    try:
        source = open_source(source_config)
    except ChangecatError:
        return None
    try:
        return source.years()
    except ChangecatError:
        return None
    finally:
        source.close()


def plan_jobs(config: Config, source: Source) -> list[Job]:
    """The config's jobs, with the pairs resolved against the years the source holds."""
    available = source.years()
    check_years(config.pairs.years(), available, source.info.location)
    pairs = config.pairs.resolve(available)
    if not pairs:
        raise ConfigError(
            f"{config.path}: pairs: no year pair to compute from the available years {available}"
        )
    jobs = make_jobs(config.regions, pairs, config.methods, source.grid_origin, config.tiling)
    return [replace(job, hotspots=config.hotspots.params(job.method)) for job in jobs]


@dataclass(frozen=True)
class _Plan:
    job: Job
    collection: str
    fingerprint: str
    reason: str | None  # why the product must be made; None when it is up to date


def _plan(job: Job, source: Source, root: Path, identity: str, force: bool, context: bool) -> _Plan:
    fingerprint = job.fingerprint(identity, __version__)
    coll = collection_id(product_info(source, job.method).dataset)
    path = item_json(root, coll, job.item_id)
    required = [CHANGE_ASSET, THUMBNAIL_ASSET, HOTSPOTS_ASSET, *embedding_context.required_assets(job)]
    required += [f"{CONTEXT_PREFIX}{y}" for y in (job.from_year, job.to_year)] if context else []
    return _Plan(job, coll, fingerprint, "forced" if force else stale_reason(path, fingerprint, required))


def stale_reason(path: Path, fingerprint: str, required: list[str]) -> str | None:
    """Why the product whose item is at ``path`` must be (re)made, or None when it is up to date: its
    fingerprint matches and its item and files agree."""
    if not path.is_file():
        return "new"
    try:
        item = read_json(path)
    except OutputError as exc:
        return str(exc)
    properties = item.get("properties")
    if not isinstance(properties, dict) or properties.get("change:fingerprint") != fingerprint:
        return "its inputs changed"
    return disagreement(path.parent, item, required)


def _note_of(reporter: Reporter) -> Callable[[str], None]:
    note = getattr(reporter, "note", None)
    return note if callable(note) else (lambda message: None)


class RunSession:
    """A run's presence in the catalog (see ``catalog.lock``): on entry, if no other run is alive, the
    leftovers of interrupted runs are removed. Inactive when the run writes nothing (read-only catalog)."""

    def __init__(self, root: Path, note: Callable[[str], None], active: bool) -> None:
        self.presence = RunPresence(root) if active else None
        self.root, self.note = root, note

    def _clean(self) -> None:
        with write_lock(self.root, self.note):  # library callers of CatalogStore write .tmp files under it
            removed = remove_leftovers(self.root)
        if removed:
            self.note(f"removed {len(removed)} leftover(s) of an interrupted run in {self.root}")

    def __enter__(self) -> RunSession:
        if self.presence is not None:
            self.presence.enter(self._clean)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.presence is not None:
            self.presence.leave()


def _run_one(
    plan: _Plan,
    source: Source,
    store: CatalogStore,
    reporter: Reporter,
    context: ContextCache | None,
    previews: embedding_context.PreviewCache | None = None,
) -> JobOutcome:
    job = plan.job

    def make(staging: Path) -> Product:
        product = make_product(job, source, staging, plan.fingerprint, reporter, context, previews)
        hold("staged")
        product = store.commit(product, staging)
        embedding_context.remember(previews, job, product.embedding)
        if context is not None:
            context.update(
                {(job.area_id, int(k[len(CONTEXT_PREFIX) :])): p for k, p in product.context.items()}
            )
        return product

    def forget(staging: Path) -> None:
        """Context composites of a failed job were never committed: later jobs must not copy them."""
        if context is not None:
            for key in [k for k, p in context.items() if p.parent == staging]:
                del context[key]

    return run_staged(plan, store, reporter, make, forget)


def run_staged(
    plan: _Plan | TimelinePlan,
    store: CatalogStore,
    reporter: Reporter,
    make: Callable[[Path], Product | None],
    on_failure: Callable[[Path], None] | None = None,
) -> JobOutcome:
    """Run one planned job unless it is up to date: ``make`` computes and commits it from a staging folder
    in its collection, which is removed afterwards whatever happens. A failure is reported in the outcome,
    not raised (after ``on_failure`` of the staging folder), so the run goes on with the other jobs."""
    job = plan.job
    if plan.reason is None:
        return JobOutcome(job, "skipped")  # type: ignore[arg-type]
    if plan.reason not in ("new", "forced"):
        _note_of(reporter)(f"remaking {job.item_id}: {plan.reason}")
    staging: Path | None = None
    try:
        coll_dir = store.root / plan.collection
        coll_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{job.item_id}-", dir=coll_dir))
        product = make(staging)
    except (ChangecatError, OSError) as exc:  # OSError: disk full, permissions... fail this job only
        if on_failure is not None and staging is not None:
            on_failure(staging)
        return JobOutcome(job, "failed", error=str(exc))  # type: ignore[arg-type]
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return JobOutcome(job, "done", product=product)  # type: ignore[arg-type]


def _source_identity(source: Source) -> str:
    info = source.info
    return f"{info.kind}:{info.dataset}:{info.location}:{source.content_id()}"


def product_info(source: Source, method: str) -> SourceInfo:
    """The source as recorded on a product: a method that reads another dataset (Sentinel-2) names it."""
    dataset = METHODS[method].dataset
    info = source.info
    if dataset is None:
        return info
    return replace(info, dataset=dataset, derived_from=[], version=source.version_of(dataset))


def make_product(
    job: Job,
    source: Source,
    out_dir: Path,
    fingerprint: str = "",
    reporter: Reporter | None = None,
    context: ContextCache | None = None,
    previews: embedding_context.PreviewCache | None = None,
) -> Product:
    """Compute one job into ``out_dir`` (COG + quicklook + hotspots table + embedding pictures, + Sentinel-2
    context COGs when ``context`` is given) and return its Product.

    Raises ``NoDataError`` when the region has no data for a year or no valid pixel; nothing is left
    half-written then. A region the source covers only partly (by its tiles' footprints) is noted to the
    reporter, and the Product records its coverage (``change:coverage``, the item's geometry).
    """
    reporter = reporter or SilentReporter()
    requests_before = source.request_count()
    for year in (job.from_year, job.to_year):
        if not source.has_data(job.region.geometry, year):
            raise NoDataError(
                f"{job.described} has no data in {source.info.location} for {year}: "
                "check the region's coordinates against the source's coverage"
            )
    coverage = pair_coverage(source, job)
    if coverage.fraction < 1.0:
        _note_of(reporter)(
            coverage_warning(job.region.id, coverage, (job.from_year, job.to_year), source.info.location)
        )
    method = METHODS[job.method]
    grid = job.grid
    region = to_crs(job.region.geometry, "EPSG:4326", grid.crs)
    windows = job_windows(job, source)
    stats = StatsAccumulator(method.value_range, grid.pixel_area_m2, grid.width * grid.height)
    hotspot_params = job.hotspots or HotspotParams(DEFAULT_THRESHOLDS[job.method])
    hotspots = HotspotAccumulator(grid, hotspot_params)
    context_windows = [] if context is None else _inside(source.context_windows(grid), region, grid)
    pictures = embedding_context.begin(job, previews)
    reporter.job_started(job, len(windows) + 2 * len(context_windows))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything is written in a staging folder and moved into place only once all of it succeeded, so a
    # failure never leaves a product whose files disagree with each other or with its catalog item.
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="hotspots") as tail:
            with CogWriter(staging / COG_NAME, grid) as writer:
                preview = pictures.wanted() if pictures is not None else None
                blocks = source.compute(
                    grid, job.from_year, job.to_year, job.method, windows, preview=preview
                )
                for window, values in mask_outside(blocks, region, grid):
                    writer.write(window, values)
                    stats.update(values)
                    hotspots.update(window, values)
                    hold("computing")
                    reporter.block_done(job, source.progress())
                if stats.count == 0:
                    raise NoDataError(
                        f"{job.described} has no valid pixel for {job.from_year}→{job.to_year}: "
                        "every pixel is nodata in at least one of the two years"
                    )
                # The hotspots table is made while the writer finishes the COG (overviews, copy, checks).
                table = tail.submit(_hotspots_table, hotspots, grid, staging / HOTSPOTS_NAME)
            write_quicklook(staging / COG_NAME, staging / THUMBNAIL_NAME)
            found = table.result()
        embedding = embedding_context.finish(pictures, job, region, staging) if pictures is not None else {}
        years = (job.from_year, job.to_year) if context is not None else ()
        for year in years:
            earlier = (context or {}).get((job.area_id, year))
            path = staging / _context_name(year)
            _write_context(source, job, year, region, context_windows, path, earlier, reporter)
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not any(out_dir.iterdir()):  # a first attempt that failed leaves no empty folder behind
            out_dir.rmdir()
    if context is not None:
        context.update({(job.area_id, y): out_dir / _context_name(y) for y in years})
    return Product(
        job=job,
        source=product_info(source, job.method),
        cog_path=out_dir / COG_NAME,
        thumbnail_path=out_dir / THUMBNAIL_NAME,
        stats=stats.result(),
        expression=method.expression,
        software_version=__version__,
        created=datetime.now(UTC),
        fingerprint=fingerprint,
        context={f"{CONTEXT_PREFIX}{y}": out_dir / _context_name(y) for y in years},
        requests=None if requests_before is None else (source.request_count() or 0) - requests_before,
        hotspots_path=out_dir / HOTSPOTS_NAME,
        hotspots=HotspotSummary(hotspot_params, len(found), sum(h.area_m2 for h in found)),
        coverage=coverage,
        embedding={key: out_dir / path.name for key, path in embedding.items()},
    )


def _hotspots_table(hotspots: HotspotAccumulator, grid: Grid, path: Path) -> list[Hotspot]:
    """The hotspots found, written as their GeoParquet table at ``path``."""
    found = hotspots.result()
    write_hotspots(path, hotspot_rows(found, grid))
    return found


def _context_name(year: int) -> str:
    return f"{CONTEXT_PREFIX}{year}.tif"


def _write_context(
    source: Source,
    job: Job,
    year: int,
    region: BaseGeometry,
    windows: list[Window],
    path: Path,
    earlier: Path | None,
    reporter: Reporter,
) -> None:
    """The year's Sentinel-2 RGB composite of the region (``region`` in the grid's CRS); copied from
    ``earlier`` when this run already downloaded it for another job of the region."""
    if earlier is not None and earlier.is_file():
        shutil.copyfile(earlier, path)
        for _ in windows:
            reporter.block_done(job)
        return
    blocks = source.context(job.grid, year, windows)
    with CogWriter(path, job.grid, count=3, dtype="uint16", nodata=0) as writer:
        for window, rgb in mask_outside(blocks, region, job.grid, nodata=0):
            writer.write(window, rgb)
            reporter.block_done(job, source.progress())


def mask_outside(
    blocks: Iterator[Block], region: BaseGeometry, grid: Grid, nodata: float = np.nan
) -> Iterator[Block]:
    """Set pixels whose centre lies outside the region (in the grid's CRS) to ``nodata``, in every band.
    Blocks wholly inside the region pass as they are (no rasterizing, no copy)."""
    shapely.prepare(region)  # one spatial index for every block's test, however many vertices it has
    for window, values in blocks:
        if region.contains(box(*grid.window_bounds(window))):
            yield window, values
            continue
        outside = geometry_mask(
            [region], out_shape=values.shape[-2:], transform=grid.window_transform(window), all_touched=False
        )
        yield window, np.where(outside, values.dtype.type(nodata), values)
