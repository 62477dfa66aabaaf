"""The ``changecat`` command line: run, plan, demo, validate, info, hotspots, publish, search, serve (a
thin layer)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from changecat import __version__
from changecat.pipeline import JobOutcome, run, source_years
from changecat.signals import EXIT_SIGTERM, exit_code, terminate_as_interrupt
from generator.config import load_config
from generator.errors import ChangecatError
from generator.plan import Job

console = Console(stderr=True, soft_wrap=True)
out = Console()
if not out.is_terminal:  # piped or logged: keep one line per row rather than wrap at 80 columns
    out.width = max(out.width, 120)


class ProgressReporter:
    """Two bars: jobs done of all jobs, and blocks done within the current job."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.jobs = progress.add_task("jobs", total=None, visible=False, detail="")
        self.blocks = progress.add_task("blocks", total=None, visible=False, detail="")

    def run_started(self, jobs: list[Job]) -> None:
        self.progress.start()  # only now: errors opening the source print without a bar above them
        self.progress.update(self.jobs, total=len(jobs), description="jobs", visible=True)

    def run_estimate(self, requests: int, pixels: int) -> None:
        """Before a metered run (Earth Engine compute is billed in EECU-hours; noncommercial quotas)."""
        self.progress.console.print(
            f"Earth Engine: this run asks for up to {requests} computePixels requests, "
            f"{pixels / 1e6:.1f} Mpx (up-to-date products are skipped; splits and retries add requests)"
        )

    def job_started(self, job: Job, blocks: int) -> None:
        self.progress.reset(
            self.blocks, total=blocks, description=f"  {job.item_id}", visible=True, detail=""
        )

    def block_done(self, job: Job, detail: str = "") -> None:
        self.progress.update(self.blocks, advance=1, detail=detail)

    def job_finished(self, outcome: JobOutcome) -> None:
        self.progress.advance(self.jobs)
        self.progress.update(self.blocks, visible=False)
        mark = {"done": "[green]done", "skipped": "[dim]skipped (up to date)", "failed": "[red]FAILED"}
        self.progress.console.print(f"{mark[outcome.status]}[/] {outcome.job.item_id}")
        if outcome.error:
            self.progress.console.print(f"  {outcome.error}", style="red", markup=False)

    def note(self, message: str) -> None:
        self.progress.console.print(message, style="yellow", markup=False, highlight=False)


def _interrupted(exc: KeyboardInterrupt) -> NoReturn:
    """Leave as shells expect after Ctrl-C or SIGTERM; the run has already cleaned up its staging."""
    code = exit_code(exc)
    console.print(
        f"interrupted ({'SIGTERM' if code == EXIT_SIGTERM else 'Ctrl-C'}); finished products are kept"
    )
    sys.exit(code)


def _run_config(
    config_path: Path, force: bool, adopt: bool = False, prune: bool = False, scheduler: str | None = None
) -> None:
    try:
        with terminate_as_interrupt():
            _run_config_inner(config_path, force, adopt, prune, scheduler)
    except KeyboardInterrupt as exc:
        _interrupted(exc)


def _run_config_inner(
    config_path: Path, force: bool, adopt: bool, prune: bool, scheduler: str | None = None
) -> None:
    config = load_config(config_path, years_of=source_years)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    progress = Progress(*columns, console=console, transient=False)
    try:
        outcomes = run(
            config, ProgressReporter(progress), force=force, adopt=adopt, prune=prune, scheduler=scheduler
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    _print_summary(config.catalog.output)
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    console.print(
        f"{counts['done']} made, {counts['skipped']} up to date, {counts['failed']} failed; "
        f"catalog: {config.catalog.output / 'catalog.json'}"
    )
    if failed:
        for o in failed:
            console.print(f"failed {o.job.item_id}: {o.error}", style="red", markup=False)
        sys.exit(1)


def _print_summary(catalog_dir: Path) -> None:
    from catalog.summary import summarize

    if not (catalog_dir / "catalog.json").is_file():
        console.print(f"no catalog at {catalog_dir}")
        return
    _print_table(str(catalog_dir), summarize(catalog_dir))


def _print_table(title: str, rows: list[dict]) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("item", overflow="fold")
    table.add_column("region", overflow="fold")
    table.add_column("years", no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("mean change", justify="right", no_wrap=True)
    table.add_column("changed area > 0.2", justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["item_id"],
            r["region"],
            f"{r['from_year']}→{r['to_year']}",
            r["method"],
            f"{r['mean']:.4f}",
            f"{r['changed_km2']:.3f} km² ({r['changed_fraction']:.1%})",
        )
    out.print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="changecat")
def cli() -> None:
    """Change maps from satellite embeddings (AlphaEarth Foundations), as COGs in a static STAC catalog.

    change = 1 − a·b of the two years' unit-length embedding vectors, per 10 m pixel.
    """


@cli.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Recompute products even when they are up to date.")
@click.option(
    "--adopt",
    is_flag=True,
    help="Add changecat's collections to an existing catalog.json that changecat did not write "
    "(refused otherwise); its links and fields are kept.",
)
@click.option("--prune", "prune_", is_flag=True, help="Afterwards remove products CONFIG no longer asks for.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only print the plan (as `changecat plan` does): what would be made or skipped and what it would "
    "read; nothing is written.",
)
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    callback=lambda ctx, param, value: _check_scheduler(value),
    help="Read and compute on a dask.distributed cluster: tcp://HOST:PORT of a running dask scheduler "
    "(e.g. from dask-jobqueue or dask-kubernetes), or local:N for a LocalCluster of N worker processes "
    "here. Workers need changecat installed, access to the source and its credentials; this process "
    "writes the COGs and the catalog. Without it, threads of this process.",
)
def run_cmd(
    config: Path, force: bool, adopt: bool, prune_: bool, dry_run: bool, as_json: bool, scheduler: str | None
) -> None:
    """Make every product CONFIG asks for and update its catalog.

    CONFIG is a regions YAML file (catalog, source, pairs, methods, regions; see README). Products that
    are already in the catalog with the same inputs, and whose files agree with their items, are skipped.
    Several runs may write one catalog at once. Exit 1 if any job failed, 130 on Ctrl-C, 143 on SIGTERM.

    With `timeline: true` in CONFIG, it also makes per region and embedding method the year of largest
    change over the years of the pairs (collection <dataset>-timeline, assets year and magnitude).
    """
    if dry_run:
        _print_plan(config, force, adopt, as_json)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run (or use `changecat plan --json`)")
    _run_config(config, force, adopt, prune_, scheduler)


def _check_scheduler(value: str | None) -> str | None:
    """A bad --scheduler is a usage error before anything is read (see generator.cluster for the forms)."""
    if value is None:
        return None
    from generator.cluster import parse_scheduler

    try:
        parse_scheduler(value)
    except ChangecatError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None
    return value


def _print_plan(config_path: Path, force: bool, adopt: bool, as_json: bool) -> None:
    """Print what a run of CONFIG would do and cost (``changecat.plan_report``); nothing is written."""
    import json

    from changecat.plan_report import build_plan, render_text, to_json

    try:
        with terminate_as_interrupt():
            plan = build_plan(load_config(config_path, years_of=source_years), force=force, adopt=adopt)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    if as_json:
        click.echo(json.dumps(to_json(plan), indent=2))
    else:
        for line in render_text(plan):
            click.echo(line)  # plain lines: no wrapping, so scripts and logs keep one line per fact
    for warning in plan.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


@cli.command("plan")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Plan as `run --force` would: every product is remade.")
@click.option(
    "--adopt", is_flag=True, help="Plan as `run --adopt` would (a catalog changecat did not write)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (machine-readable).")
def plan_cmd(config: Path, force: bool, adopt: bool, as_json: bool) -> None:
    """Print what `changecat run CONFIG` would do, before any pixel is read; write nothing.

    Per region: the years the source holds there, how much of the region the source covers (percent of
    its area inside the source's tiles of each year, and of both years of each pair), the grid (CRS,
    width × height, pixel size), each product to make (new, inputs changed, forced, files disagree) or
    skip as up to date, and what the run will read: file blocks and their compressed bytes for the aef
    source (from the files' headers), computePixels requests and pixels for Earth Engine. Totals at the
    end; a warning for every region only partly covered. Works on a read-only or missing catalog folder.
    """
    _print_plan(config, force, adopt, as_json)


@cli.command("prune")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def prune_cmd(config: Path, dry_run: bool) -> None:
    """Remove the products (item folder and link) whose region, pair or method left CONFIG.

    Only items changecat wrote are touched, and only the files their items name. Every collection of the
    catalog is considered: prune with the config that owns the whole catalog.
    """
    from changecat.pipeline import prune

    try:
        with terminate_as_interrupt():
            removed = prune(
                load_config(config), dry_run=dry_run, note=lambda m: console.print(m, markup=False)
            )
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        out.print(f"{verb} {path}", markup=False, highlight=False)
    console.print(
        f"{len(removed)} product(s) {'to remove (dry run, nothing changed)' if dry_run else 'removed'}"
    )


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build"),
    show_default=True,
    help="Folder for the demo mirror (OUT/demo) and the catalog (OUT/catalog).",
)
@click.option("--force", is_flag=True, help="Recompute products even when they are up to date.")
def demo(out: Path, force: bool) -> None:
    """Build a small synthetic AEF mirror and run the whole pipeline on it, offline."""
    from generator.demo import prepare_demo

    console.print(f"preparing the demo mirror in {out / 'demo'} …")
    _run_config(prepare_demo(out), force)


@cli.command()
@click.argument("catalog")
@click.option(
    "--schemas",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Folder of STAC extension schemas laid out as <extension>/<version>/schema.json; "
    "without it they are fetched (needs network; changecat's own schema is built in).",
)
def validate(catalog: str, schemas: Path | None) -> None:
    """Validate a catalog: STAC core, declared extensions, changecat's schema, COGs and checksums.

    CATALOG is a catalog's folder, its catalog.json, or an http(s):// URL of either. Prints one line per
    problem and exits 1 if there is any (2 if it cannot be validated at all, e.g. schemas out of reach).
    """
    from catalog.validate import validate_catalog

    problems = validate_catalog(catalog, schemas)
    for p in problems:
        out.print(p, markup=False, highlight=False)
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/] in {catalog}", highlight=False)
        sys.exit(1)
    console.print(f"[green]valid[/]: {catalog}", highlight=False)


@cli.command()
@click.argument("catalog")
def info(catalog: str) -> None:
    """Print the summary table of what a catalog holds.

    CATALOG is a catalog's folder, its catalog.json, or an http(s):// URL of either; exit 2 if there is
    no catalog there.
    """
    from catalog.location import catalog_location, iter_items
    from catalog.summary import summarize_items

    _print_table(catalog, summarize_items(iter_items(catalog_location(catalog))))


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("dest")
@click.option(
    "--base-url",
    required=True,
    help="The http(s) URL DEST will be read from (e.g. https://bucket.s3.amazonaws.com/prefix/).",
)
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; write nothing.")
def publish(catalog_dir: Path, dest: str, base_url: str, dry_run: bool) -> None:
    """Publish CATALOG_DIR to DEST (s3://bucket/prefix, gs://..., az://... or a folder).

    Assets first, then items, collections and the root; objects already there with the same content
    are skipped and nothing is deleted. Credentials and endpoints as the store reads them (AWS_*,
    AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*).
    """
    from catalog.publish import publish as publish_catalog
    from generator.urls import public_href

    def report(upload, skipped: bool) -> None:
        if not skipped:
            verb = "would upload" if dry_run else "uploaded"
            out.print(f"{verb} {upload.key} ({upload.content_type})", markup=False, highlight=False)

    result = publish_catalog(catalog_dir, dest, base_url, dry_run=dry_run, on_upload=report)
    verb = "to upload" if dry_run else "uploaded"
    console.print(
        f"{len(result.uploaded)} {verb}, {len(result.skipped)} unchanged; "
        f"catalog: {base_url.rstrip('/')}/catalog.json ({public_href(dest)})",
        markup=False,
        highlight=False,
    )


@cli.command()
@click.argument("catalog", metavar="CATALOG_OR_URL")
@click.option("--bbox", nargs=4, type=float, default=None, help="WEST SOUTH EAST NORTH (WGS84).")
@click.option("--years", nargs=2, type=int, default=None, help="FROM TO: products of exactly this pair.")
@click.option("--method", "methods", multiple=True, help="cosine, angle, s2-difference (repeatable).")
@click.option("--region", "regions", multiple=True, help="Region id (repeatable).")
@click.option("--asset", default="change", show_default=True, help="Asset whose URL is printed.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the matching items as a GeoJSON FeatureCollection."
)
def search(
    catalog: str,
    bbox: tuple[float, float, float, float] | None,
    years: tuple[int, int] | None,
    methods: tuple[str, ...],
    regions: tuple[str, ...],
    asset: str,
    as_json: bool,
) -> None:
    """Find products in a catalog (folder or published URL) through its stac-geoparquet files.

    Prints one line per item: its id and the URL of ASSET.
    """
    import json

    from catalog.search import Query
    from catalog.search import search as search_catalog

    items = search_catalog(catalog, Query(bbox=bbox, years=years, methods=methods, regions=regions))
    if as_json:
        click.echo(json.dumps({"type": "FeatureCollection", "features": items}, indent=2))
    else:
        for item in items:
            href = item.get("assets", {}).get(asset, {}).get("href", "")
            click.echo(f"{item['id']}\t{href}")
    console.print(f"{len(items)} item(s)")


@cli.command()
@click.argument("item", metavar="ITEM_OR_FOLDER", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--geojson", "geojson", default=None, help="Also write them as GeoJSON to this file ('-': stdout)."
)
def hotspots(item: Path, geojson: str | None) -> None:
    """List the hotspots of a change item (ranked by area × mean change).

    ITEM_OR_FOLDER is an item's JSON file, its folder, or its hotspots.parquet. With --geojson the
    polygons (WGS84) are written as a GeoJSON FeatureCollection, for QGIS or a web map.
    """
    import json

    from catalog.hotspots import find_hotspots_file, read_hotspots, to_geojson

    rows = read_hotspots(find_hotspots_file(item))
    if geojson is not None:
        text = json.dumps(to_geojson(rows))
        if geojson == "-":
            click.echo(text)
            return
        Path(geojson).write_text(text + "\n", encoding="utf-8")
        console.print(f"{len(rows)} hotspot(s) written to {geojson}", markup=False, highlight=False)
    table = Table(title=str(item), box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("rank", "area (ha)", "mean change", "max change", "centroid (lon, lat)"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            str(r["rank"]),
            f"{r['area_m2'] / 1e4:.2f}",
            f"{r['mean_change']:.4f}",
            f"{r['max_change']:.4f}",
            f"{r['centroid_lon']:.5f}, {r['centroid_lat']:.5f}",
        )
    out.print(table)


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--port", type=int, default=8765, show_default=True, help="Port on 127.0.0.1 (0: any free).")
def serve(catalog_dir: Path, port: int) -> None:
    """Serve CATALOG_DIR on 127.0.0.1 as it would be published (byte ranges, CORS), and print the URL
    to open it in STAC Browser. Stop with Ctrl-C."""
    from catalog.serve import CatalogServer, browser_url

    server = CatalogServer(catalog_dir, port=port)
    console.print(f"catalog: {server.catalog_url}", markup=False, highlight=False)
    console.print(f"STAC Browser: {browser_url(server.catalog_url)}", markup=False, highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    """Entry point: changecat errors become one clear message and exit code 2, never a traceback."""
    try:
        cli(standalone_mode=True)
    except ChangecatError as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        sys.exit(2)
