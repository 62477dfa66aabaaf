"""Speed and memory of one AEF job on large synthetic regions; prints wall time, Mpx/s and peak RSS.

Each region size runs in a fresh process so its peak RSS is its own: memory should stay flat while time
grows with the region. The mirror is built once (under --work) and reused. Its embeddings are one constant
vector (texture off) so that building it stays quick; that makes its tiles compress far better than real
AEF tiles, so real I/O is slower than measured here, while de-quantizing and the dot products cost the same.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

from shapely.geometry import box

from generator.synthetic import MirrorSpec, Plant, build_mirror

LAT = 52.0
LON = 13.0
SIZES_MPX = (5.0, 50.0)
SPEC = MirrorSpec(
    bounds=(LON, LAT, LON + 1.1, LAT + 0.66),
    years=(2017, 2024),
    tile_size=1024,
    plants=(Plant(box(LON + 0.1, LAT + 0.1, LON + 0.3, LAT + 0.2), year=2024, change=0.4),),
    texture=False,
    seed=1,
)


def region_for(mpx: float) -> tuple[float, float, float, float]:
    """A square lon/lat box of about ``mpx`` megapixels at 10 m, inside the mirror."""
    side_m = math.sqrt(mpx * 1e6) * 10.0
    dlat = side_m / 111_320.0
    dlon = side_m / (111_320.0 * math.cos(math.radians(LAT + dlat / 2)))
    return (LON + 0.01, LAT + 0.01, LON + 0.01 + dlon, LAT + 0.01 + dlat)


def one_job(mirror: Path, mpx: float, out: Path) -> dict:
    from changecat.pipeline import make_product
    from generator.plan import Region, make_jobs
    from generator.sources.aef import AefSource

    source = AefSource(str(mirror))
    region = Region("bench", "bench", box(*region_for(mpx)))
    job = make_jobs((region,), [(2017, 2024)], ("cosine",), source.grid_origin)[0]
    start = time.perf_counter()
    product = make_product(job, source, out)
    wall = time.perf_counter() - start
    source.close()
    pixels = job.grid.width * job.grid.height
    return {
        "mpx": pixels / 1e6,
        "wall_s": wall,
        "mpx_per_s": pixels / 1e6 / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mean_change": product.stats.mean,
        "cog_mib": product.cog_path.stat().st_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench"), help="folder for mirror and output")
    parser.add_argument("--sizes", type=float, nargs="+", default=SIZES_MPX, help="region sizes in Mpx")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mirror = args.work / "aef"
    if args.child is not None:
        print(json.dumps(one_job(mirror, args.child, args.work / f"out-{args.child:g}")))
        return
    if not (mirror / "aef_index.parquet").is_file():
        start = time.perf_counter()
        build_mirror(mirror, SPEC)
        print(f"built the benchmark mirror in {time.perf_counter() - start:.0f} s: {mirror}")
    print(f"{'region':>10} {'wall':>8} {'Mpx/s':>8} {'peak RSS':>10} {'COG':>8}")
    for mpx in args.sizes:
        cmd = [sys.executable, __file__, "--work", str(args.work), "--child", str(mpx)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"{result['mpx']:8.1f}Mpx {result['wall_s']:7.1f}s {result['mpx_per_s']:8.2f} "
            f"{result['peak_rss_mib']:7.0f}MiB {result['cog_mib']:6.1f}MiB"
        )


if __name__ == "__main__":
    main()
