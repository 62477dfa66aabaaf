"""The ``changecat`` command line: run, demo, validate, info, publish, search, serve (a thin layer)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from changecat import __version__
from changecat.pipeline import JobOutcome, run
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


def _run_config(config_path: Path, force: bool) -> None:
    config = load_config(config_path)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    progress = Progress(*columns, console=console, transient=False)
    try:
        outcomes = run(config, ProgressReporter(progress), force=force)
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
    rows = summarize(catalog_dir)
    table = Table(title=f"{catalog_dir}", box=box.SIMPLE_HEAD, pad_edge=False)
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
def run_cmd(config: Path, force: bool) -> None:
    """Make every product CONFIG asks for and update its catalog.

    CONFIG is a regions YAML file (catalog, source, pairs, methods, regions; see README). Products that
    are already in the catalog with the same inputs are skipped. Exit 1 if any job failed.
    """
    _run_config(config, force)


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
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--schemas",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Folder of STAC extension schemas laid out as <extension>/<version>/schema.json; "
    "without it they are fetched and cached (needs network).",
)
def validate(catalog_dir: Path, schemas: Path | None) -> None:
    """Validate a catalog: STAC core, declared extensions, changecat's schema, COGs and checksums.

    Prints one line per problem and exits 1 if there is any.
    """
    from catalog.validate import validate_catalog

    problems = validate_catalog(catalog_dir, schemas)
    for p in problems:
        out.print(p, markup=False, highlight=False)
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/] in {catalog_dir}")
        sys.exit(1)
    console.print(f"[green]valid[/]: {catalog_dir}")


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def info(catalog_dir: Path) -> None:
    """Print the summary table of what a catalog holds."""
    _print_summary(catalog_dir)


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
