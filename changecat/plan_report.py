"""``changecat plan`` / ``run --dry-run``: what a run would do and cost, before any pixel is read.

Per region (each grid of a region, when it is cut into tiles): the years the source holds there, how much
of it the source covers, the grid, the products to make (and why) or skip as up to date, and their cost —
file blocks and compressed bytes for the AEF source, computePixels requests and pixels for Earth Engine.
Built from the run's own job list and up-to-date test (``pipeline.plan_jobs`` / ``pipeline._plan``) and the
sources' cost hooks, which count what ``compute`` reads. Nothing is written, no lock is taken: the output
folder may be read-only or missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from catalog.store import CatalogStore
from changecat.cost import (
    CoverageCache,
    context_cost,
    coverage_warning,
    fraction_of,
    job_cost,
    pair_coverage,
    year_coverage,
)
from changecat.embedding_context import picture_cost
from changecat.pipeline import _plan, _source_identity, plan_jobs
from changecat.timeline_run import TimelinePlan, plan_timelines
from generator.config import Config
from generator.grid import Grid
from generator.plan import Job
from generator.sources import open_source
from generator.sources.base import Cost, Source


@dataclass(frozen=True)
class ProductPlan:
    """One product: made (``reason`` says why) or skipped as up to date (``reason`` None)."""

    item_id: str
    collection: str
    from_year: int
    to_year: int
    method: str
    reason: str | None
    coverage: float  # of the region, by the source in both years
    cost: Cost  # zero for a skipped product

    @property
    def action(self) -> str:
        if self.reason is None:
            return "skip"
        return "fail" if self.coverage == 0.0 else "make"


@dataclass
class RegionPlan:
    """A region's grid and its products; ``years``: the source's years with data over the region."""

    region_id: str
    title: str
    grid: Grid
    years: list[int]
    year_coverage: dict[int, float]
    products: list[ProductPlan] = field(default_factory=list)


@dataclass
class Plan:
    kind: str
    location: str
    years: list[int]
    catalog: str
    regions: list[RegionPlan]
    warnings: list[str]

    def total(self) -> Cost:
        cost = Cost()
        for region in self.regions:
            for product in region.products:
                cost += product.cost
        return cost

    def count(self, action: str) -> int:
        return sum(p.action == action for r in self.regions for p in r.products)


def build_plan(config: Config, force: bool = False, adopt: bool = False) -> Plan:
    """What ``run(config, force=force)`` would make, skip and read; reads the index/headers/footprints and
    the catalog's items only."""
    cat = config.catalog
    store = CatalogStore(
        cat.output, catalog_id=cat.id, title=cat.title, description=cat.description, adopt=adopt
    )
    store.check_owner()  # the same refusal as the run, before the source is opened
    source = open_source(config.source)
    try:
        jobs = plan_jobs(config, source)
        context = bool(getattr(config.source, "s2_context", False))
        identity = _source_identity(source) + (":s2-context" if context else "")
        years = source.years()
        regions: dict[tuple[str, Grid], RegionPlan] = {}
        warnings: list[str] = []
        cache: CoverageCache = {}
        costs: dict[tuple[Grid, int, int, str], Cost] = {}
        composites: set[tuple[str, Grid, int]] = set()
        pictures: set[tuple[str, Grid, int]] = set()
        for job in jobs:
            key = (job.region.id, job.grid)
            if key not in regions:
                regions[key] = _region_plan(job, source, years, cache)
            plan = _plan(job, source, store.root, identity, force, context)
            coverage = pair_coverage(source, job, cache)
            cost = Cost()
            if plan.reason is not None and coverage.fraction > 0.0:
                cost = _cached_cost(job, source, costs) + picture_cost(job, source, pictures)
                for year in (job.from_year, job.to_year) if context else ():
                    if (job.region.id, job.grid, year) not in composites:
                        composites.add((job.region.id, job.grid, year))
                        cost += context_cost(job, source)
            if coverage.fraction < 1.0:
                where = source.info.location
                warnings.append(
                    coverage_warning(job.region.id, coverage, (job.from_year, job.to_year), where)
                )
            regions[key].products.append(
                ProductPlan(
                    job.item_id,
                    plan.collection,
                    job.from_year,
                    job.to_year,
                    job.method,
                    plan.reason,
                    coverage.fraction,
                    cost,
                )
            )
        for timeline in plan_timelines(config, source, store.root, identity, force):
            product, pairs = _timeline_plan(timeline, source, costs, cache)
            key = (timeline.job.region.id, timeline.job.grid)
            regions.setdefault(key, _region_plan(pairs[0], source, years, cache)).products.append(product)
        info = source.info
        return Plan(
            info.kind, info.location, years, str(store.root), list(regions.values()), _unique(warnings)
        )
    finally:
        source.close()


def _timeline_plan(
    plan: TimelinePlan, source: Source, costs: dict[tuple[Grid, int, int, str], Cost], cache: CoverageCache
) -> tuple[ProductPlan, list[Job]]:
    """A timeline product and the change jobs of its pairs. Its cost is its pairs' (each computed as a
    change product's, in chunks of windows: a file block at a chunk's edge may be read twice, so an
    estimate); its coverage the largest of a pair's (a pixel counts where any pair has data)."""
    t = plan.job
    pairs = [Job(t.region, a, b, t.method, t.grid) for a, b in t.pairs]
    coverage = max(pair_coverage(source, job, cache).fraction for job in pairs)
    cost = Cost()
    if plan.reason is not None and coverage > 0.0:
        for job in pairs:
            cost += _cached_cost(job, source, costs)
        cost = replace(cost, exact=False)
    product = ProductPlan(
        t.item_id, plan.collection, t.from_year, t.to_year, t.method, plan.reason, coverage, cost
    )
    return product, pairs


def _region_plan(job: Job, source: Source, years: list[int], cache: CoverageCache) -> RegionPlan:
    fractions = {y: fraction_of(year_coverage(source, job, y, cache), job) for y in years}
    with_data = [y for y, f in fractions.items() if f > 0.0]
    return RegionPlan(job.region.id, job.region.title, job.grid, with_data, fractions)


def _cached_cost(job: Job, source: Source, costs: dict[tuple[Grid, int, int, str], Cost]) -> Cost:
    """A job's cost; jobs of the same grid and years read the same (each reads it again in the run)."""
    key = (job.grid, job.from_year, job.to_year, job.region.id)
    if key not in costs:
        costs[key] = job_cost(job, source)
    return costs[key]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- output -----------------------------------------------------------------------------------------------


def describe_cost(cost: Cost, kind: str) -> str:
    """ "12 blocks, 3.4 MB" (a mirror of files) or "3 computePixels requests, 1.2 Mpx" (Earth Engine)."""
    parts = []
    if cost.blocks or kind == "aef":
        parts.append(f"{cost.blocks} blocks, {_bytes(cost.bytes)}")
    if cost.requests or kind == "earthengine":
        parts.append(f"{cost.requests} computePixels requests, {cost.pixels / 1e6:.2f} Mpx")
    text = "; ".join(parts) or "nothing to read"
    return text + ("" if cost.exact else " (estimate)")


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render_text(plan: Plan) -> list[str]:
    """The plan as lines for a terminal (or a log)."""
    lines = [f"source: {plan.kind} {plan.location}; years {', '.join(map(str, plan.years))}"]
    lines.append(f"catalog: {plan.catalog}")
    for r in plan.regions:
        g = r.grid
        pixel = abs(g.transform.a)
        covered = ", ".join(f"{y} {f:.1%}" for y, f in r.year_coverage.items())
        lines += [
            "",
            f"region {r.region_id} ({r.title})",
            f"  years with data: {', '.join(map(str, r.years)) or 'none'}",
            f"  coverage by the source: {covered}",
            f"  grid: {g.crs}, {g.width} × {g.height} px of {pixel:g} m",
        ]
        for p in r.products:
            what = f"{p.from_year}→{p.to_year} {p.method}, coverage {p.coverage:.1%}"
            if p.action == "skip":
                lines.append(f"  skip  {p.item_id}: up to date ({what})")
            elif p.action == "fail":
                lines.append(f"  fail  {p.item_id}: the source has no data over the region ({what})")
            else:
                lines.append(f"  make  {p.item_id}: {p.reason}; {describe_cost(p.cost, plan.kind)} ({what})")
    lines += ["", f"total: {plan.count('make')} to make, {plan.count('skip')} up to date"]
    if plan.count("fail"):
        lines[-1] += f", {plan.count('fail')} without data"
    lines.append(f"  to read: {describe_cost(plan.total(), plan.kind)}")
    lines += [f"warning: {w}" for w in plan.warnings]
    return lines


def _cost_json(cost: Cost) -> dict[str, Any]:
    return {
        "blocks": cost.blocks,
        "bytes": cost.bytes,
        "requests": cost.requests,
        "pixels": cost.pixels,
        "exact": cost.exact,
    }


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON data (``--json``)."""
    regions = []
    for r in plan.regions:
        g = r.grid
        regions.append(
            {
                "id": r.region_id,
                "title": r.title,
                "years": r.years,
                "coverage": {str(y): round(f, 6) for y, f in r.year_coverage.items()},
                "grid": {
                    "crs": g.crs,
                    "width": g.width,
                    "height": g.height,
                    "pixel_size": abs(g.transform.a),
                    "transform": list(g.transform)[:6],
                },
                "products": [
                    {
                        "item_id": p.item_id,
                        "collection": p.collection,
                        "from_year": p.from_year,
                        "to_year": p.to_year,
                        "method": p.method,
                        "action": p.action,
                        "reason": p.reason,
                        "coverage": round(p.coverage, 6),
                        "cost": _cost_json(p.cost),
                    }
                    for p in r.products
                ],
            }
        )
    return {
        "source": {"kind": plan.kind, "location": plan.location, "years": plan.years},
        "catalog": plan.catalog,
        "regions": regions,
        "totals": {
            "make": plan.count("make"),
            "skip": plan.count("skip"),
            "fail": plan.count("fail"),
            **_cost_json(plan.total()),
        },
        "warnings": plan.warnings,
    }
