"""The AEF product on a dask cluster (``--scheduler local:2``) against the threaded run, on files shaped like
the real ones, and the cost of scheduling one unit on the cluster; prints the figures and what they mean for
a Germany-sized region (3.6 Gpx per year pair) on a cluster of 10 machines.

The mirror is made as benchmarks/bench_aef.py makes it (generator/synthetic.py: 8192² px files, 1024-px
blocks, 64 bands int8, noisy per-pixel vectors), but only as large as the 25 Mpx region needs (~3 GB); it
is deleted at the end unless --keep-mirror. Measures, each in this process, in this order:
- threads: ``make_product`` of the 25 Mpx region with the source's own threads (today's run);
- cluster: the same with the units on a LocalCluster of 2 worker processes (1 thread each);
- cluster source: the cluster computing every unit and handing the blocks back, nothing written — the
  compute rate of the workers, without the writer of this process;
- overhead: many tiny tasks (a no-op on a 1-pixel unit) through the same bounded stream: the scheduling
  cost per unit, against the threads' cost per unit.
The two products' pixels are compared (they must be equal).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator.synthetic import MirrorSpec, Plant, build_mirror  # noqa: E402

LAT = 52.0
LON = 13.3
MPX = 25.0
EDGE_M = 3000.0
SPEC = MirrorSpec(
    bounds=(LON, LAT, LON + 0.84, LAT + 0.5),  # ~57 km × 56 km: room for the 25 Mpx region (50 km a side)
    years=(2017, 2024),
    tile_size=8192,
    plants=(Plant(box(LON + 0.1, LAT + 0.1, LON + 0.3, LAT + 0.2), year=2024, change=0.4),),
    seed=1,
    block_size=1024,
    interleave="BAND",
    noise=60,
)
YEARS = (2017, 2024)
TINY_TASKS = 2000
GERMANY_MPX = 3600.0
"""Germany at 10 m, one year pair (issue 10)."""
MACHINES = 10


def region_for(mpx: float) -> tuple[float, float, float, float]:
    """A square lon/lat box of about ``mpx`` megapixels at 10 m, inside the mirror, off its block lattice."""
    side_m = math.sqrt(mpx * 1e6) * 10.0
    dlat = side_m / 111_320.0
    lat0 = LAT + EDGE_M / 111_320.0
    dlon = side_m / (111_320.0 * math.cos(math.radians(lat0 + dlat / 2)))
    lon0 = LON + EDGE_M / (111_320.0 * math.cos(math.radians(lat0)))
    return (lon0, lat0, lon0 + dlon, lat0 + dlat)


def _job(source, mpx: float):
    from generator.plan import Region, make_jobs

    region = Region("bench", "bench", box(*region_for(mpx)))
    return make_jobs((region,), [YEARS], ("cosine",), source.grid_origin)[0]


def product(root: str, out: Path, scheduler: str | None) -> tuple[float, object]:
    from changecat.pipeline import make_product
    from changecat.run_executor import attach
    from generator.sources.aef import AefSource

    source = AefSource(root)
    executor = attach(source, scheduler, print)
    try:
        job = _job(source, MPX)
        start = time.perf_counter()
        made = make_product(job, source, out)
        return time.perf_counter() - start, made
    finally:
        source.close()
        if executor is not None:
            executor.close()


def source_only(root: str, scheduler: str) -> tuple[float, float]:
    """(seconds, Mpx) of computing every unit on the cluster and receiving the blocks, nothing written."""
    from changecat.cost import job_windows
    from changecat.run_executor import attach
    from generator.sources.aef import AefSource

    source = AefSource(root)
    executor = attach(source, scheduler, lambda m: None)
    try:
        job = _job(source, MPX)
        windows = job_windows(job, source)
        start = time.perf_counter()
        pixels = sum(v.size for _, v in source.compute(job.grid, *YEARS, "cosine", windows))
        return time.perf_counter() - start, pixels / 1e6
    finally:
        source.close()
        executor.close()


def writer_only(root: str, made, out: Path) -> float:
    """Seconds of ``make_product`` when the blocks cost nothing: a source that reads them back from the
    finished product ``made`` (the writer's own rate: COG, statistics, hotspots, quicklook); its embedding
    pictures are taken from ``made`` too, as a run reuses them for the other jobs of a grid."""
    import rasterio

    from changecat.pipeline import make_product
    from generator.sources.aef import AefSource

    class Replay(AefSource):
        def compute(self, grid, from_year, to_year, method, windows, preview=None):  # type: ignore[override]
            with rasterio.open(made.cog_path) as src:
                for w in windows:
                    yield w, src.read(1, window=w)

    source = Replay(root)
    try:
        job = _job(source, MPX)
        pictures = {(job.region.id, job.grid, y): made.embedding[f"embedding_{y}"] for y in YEARS}
        start = time.perf_counter()
        make_product(job, source, out, previews=pictures)
        return time.perf_counter() - start
    finally:
        source.close()


def _noop(item: int) -> int:
    return item


def overhead(scheduler: str) -> tuple[float, float]:
    """(µs per unit on the cluster, µs per unit on threads) for TINY_TASKS no-op units."""
    from generator.cluster import DaskExecutor, ThreadExecutor

    executor = DaskExecutor(scheduler)
    try:
        list(executor.map(_noop, range(50)))  # warm up: the function reaches the workers
        start = time.perf_counter()
        assert sum(executor.map(_noop, range(TINY_TASKS))) == TINY_TASKS * (TINY_TASKS - 1) // 2
        cluster = (time.perf_counter() - start) / TINY_TASKS * 1e6
    finally:
        executor.close()
    start = time.perf_counter()
    assert sum(ThreadExecutor(2).map(_noop, range(TINY_TASKS))) == TINY_TASKS * (TINY_TASKS - 1) // 2
    threads = (time.perf_counter() - start) / TINY_TASKS * 1e6
    return cluster, threads


def same_pixels(a: Path, b: Path) -> bool:
    import numpy as np
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return bool(np.array_equal(x.read(1), y.read(1), equal_nan=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench-cluster"), help="mirror and output")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    parser.add_argument("--cores", type=int, default=8, help="cores per machine for the Germany estimate")
    parser.add_argument("--keep-mirror", action="store_true", help="keep the ~3 GB mirror for the next run")
    args = parser.parse_args()
    from distributed import LocalCluster

    mirror = args.work / "aef-real-shaped-25"
    begin = time.perf_counter()
    if not (mirror / "aef_index.parquet").is_file():
        start = time.perf_counter()
        build_mirror(mirror, SPEC)
        size = sum(p.stat().st_blocks * 512 for p in mirror.rglob("*.tiff")) / 2**30
        print(f"built the mirror in {time.perf_counter() - start:.0f} s: {mirror} ({size:.1f} GiB on disk)")
    out = Path(tempfile.mkdtemp(prefix="out-", dir=args.work))
    try:
        t_threads, made = product(str(mirror), out / "threads", None)
        mpx = made.job.grid.width * made.job.grid.height / 1e6
        print(f"{mpx:.1f} Mpx region, {made.stats.count / 1e6:.1f} Mpx valid")
        print(f"threads          {t_threads:7.1f} s  {mpx / t_threads:6.2f} Mpx/s")
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as lc:
            address = lc.scheduler_address
            t_cluster, made_c = product(str(mirror), out / "cluster", address)
            print(f"cluster local:{args.workers}  {t_cluster:7.1f} s  {mpx / t_cluster:6.2f} Mpx/s")
            t_src, src_mpx = source_only(str(mirror), address)
            print(
                f"cluster source   {t_src:7.1f} s  {src_mpx / t_src:6.2f} Mpx/s (computed, nothing written)"
            )
            per_task, per_thread_unit = overhead(address)
        print(
            f"overhead per unit: cluster {per_task:.0f} µs, threads {per_thread_unit:.0f} µs "
            f"({TINY_TASKS} no-op units)"
        )
        equal = same_pixels(made.cog_path, made_c.cog_path)
        print(f"pixels equal: {equal}")
        units = len(list(made.job.grid.windows(1024)))
        print(
            f"{units} units of ≤ 1024² px: scheduling is {units * per_task / 1e6:.2f} s of the "
            f"{t_cluster:.1f} s cluster run"
        )
        t_writer = writer_only(str(mirror), made, out / "writer")
        print(
            f"writer only      {t_writer:7.1f} s  {mpx / t_writer:6.2f} Mpx/s (blocks read back from the COG)"
        )
        rate_core = src_mpx / t_src / args.workers
        compute = MACHINES * args.cores * rate_core
        write = mpx / t_writer
        bound = "this process's writer" if write < compute else "the workers"
        print(
            f"Germany ({GERMANY_MPX:.0f} Mpx per pair) on {MACHINES} machines × {args.cores} cores: the "
            f"workers compute ~{compute:.0f} Mpx/s ({rate_core:.2f} Mpx/s per core here), one writer takes "
            f"~{write:.1f} Mpx/s: ~{GERMANY_MPX / min(compute, write) / 60:.0f} min per pair, bound by "
            f"{bound}"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.keep_mirror:
            shutil.rmtree(mirror, ignore_errors=True)
    print(f"benchmark took {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
