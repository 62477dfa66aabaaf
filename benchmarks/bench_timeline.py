"""Speed and memory of the timeline product (year of largest change) on a small mirror shaped like the real
files (1024-px internal blocks, 64 bands int8 band-interleaved, bottom-up, per-pixel noise), prints a table.

Each measure runs in a fresh process (its peak RSS is its own):
- pairs: the consecutive pairs made as change products one after the other (``make_product``), what a
  run without ``timeline`` does for ``pairs: consecutive``;
- timeline: ``make_timeline`` with the default chunk (``CHUNK_PIXELS``);
- timeline-small-chunk: the same with 0.25 Mpx chunks (memory bound tighter, more source calls).
The timeline computes each consecutive pair on each chunk through ``Source.compute``, so an inner year's
blocks are decoded twice (once per pair it belongs to), like the pairs' products do.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_aef import peak_rss_mib  # noqa: E402
from generator.synthetic import MirrorSpec, Plant, build_mirror  # noqa: E402

LAT = 52.0
LON = 13.3
SIDE_M = 12_000.0
"""The region's side: 1200 × 1200 px = 1.44 Mpx at 10 m."""
SMALL_CHUNK = 256 * 1024
"""Pixels of the small-chunk measure: a quarter of one 1024² source block lattice cell."""
YEARS = (2018, 2019, 2020, 2021)
SPEC = MirrorSpec(
    bounds=(LON, LAT, LON + 0.2, LAT + 0.13),
    years=YEARS,
    tile_size=2048,
    plants=(Plant(box(LON + 0.05, LAT + 0.05, LON + 0.08, LAT + 0.07), year=2020, change=0.4),),
    seed=1,
    block_size=1024,
    interleave="BAND",
    noise=60,
)


def region() -> tuple[float, float, float, float]:
    dlat = SIDE_M / 111_320.0
    lat0 = LAT + 0.01
    dlon = SIDE_M / (111_320.0 * math.cos(math.radians(lat0 + dlat / 2)))
    return (LON + 0.02, lat0, LON + 0.02 + dlon, lat0 + dlat)


def measure(kind: str, root: str, out: Path) -> dict:
    """Run one measure in this process; returns its figures."""
    import changecat.timeline_run as timeline_run
    import generator.timeline as timeline
    from changecat.pipeline import make_product
    from generator.plan import Region, make_jobs
    from generator.sources.aef import AefSource

    source = AefSource(root)
    area = Region("bench", "bench", box(*region()))
    pairs = list(itertools.pairwise(YEARS))
    start = time.perf_counter()
    if kind == "pairs":
        for job in make_jobs((area,), pairs, ("cosine",), source.grid_origin):
            make_product(job, source, out / job.item_id)
        grid = job.grid
    else:
        chunk = SMALL_CHUNK if kind == "timeline-small-chunk" else timeline.CHUNK_PIXELS
        job = make_jobs((area,), [(YEARS[0], YEARS[-1])], ("cosine",), source.grid_origin)[0]
        tjob = timeline.TimelineJob(area, YEARS, "cosine", job.grid)
        timeline_run.make_timeline(tjob, source, out / tjob.item_id, chunk_pixels=chunk)
        grid = job.grid
    seconds = time.perf_counter() - start
    source.close()
    return {
        "kind": kind,
        "mpx": grid.width * grid.height / 1e6,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench-timeline"), help="mirror and output")
    parser.add_argument("--keep-mirror", action="store_true", help="keep the mirror for the next run")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measure in a child process
    args = parser.parse_args()
    mirror = args.work / "mirror"
    if args.measure:
        out = args.work / f"out-{args.measure}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        print(json.dumps(measure(args.measure, str(mirror), out)))
        shutil.rmtree(out, ignore_errors=True)
        return
    if not (mirror / "aef_index.parquet").is_file():
        t0 = time.perf_counter()
        build_mirror(mirror, SPEC)
        print(f"mirror built in {time.perf_counter() - t0:.0f} s")
    rows = []
    for kind in ("pairs", "timeline", "timeline-small-chunk"):
        cmd = [sys.executable, __file__, "--work", str(args.work), "--measure", kind]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.splitlines()[-1]))
    print(f"{'measure':<22} {'Mpx':>6} {'seconds':>8} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['kind']:<22} {r['mpx']:>6.2f} {r['seconds']:>8.2f} {r['peak_rss_mib']:>13.1f}")
    if not args.keep_mirror:
        shutil.rmtree(mirror, ignore_errors=True)


if __name__ == "__main__":
    main()
