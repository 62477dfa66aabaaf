"""Where the wall time of one AEF product goes: ``make_product`` under cProfile on the bench mirror.

Run after ``python benchmarks/bench_aef.py --keep-mirror`` (it reuses that mirror)::

    python benchmarks/profile_product.py --mpx 5 [--mpx 100] [--top 25]

Prints, per region size, the wall and CPU time of the product and the main thread's own CPU time in
each stage (masking, COG writes, statistics, hotspots, the COG tail: overviews, copy, validation and
read-back; quicklook), then cProfile's top entries. The source's reading and kernel, GDAL's compression
and the hotspots table (made while the COG is finished) run on other threads, which this profile does not
see: the process's CPU time minus the main thread's is theirs.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

STAGES = {
    "whole product": ("pipeline.py", "make_product"),
    "waiting for source blocks": ("_base.py", "result"),
    "mask_outside": ("pipeline.py", "mask_outside"),
    "CogWriter.write (intermediate GeoTIFF)": ("raster.py", "write"),
    "StatsAccumulator.update": ("stats.py", "update"),
    "HotspotAccumulator.update": ("hotspots.py", "update"),
    "CogWriter tail (after the last block)": ("raster.py", "_finish"),
    "  overviews": ("raster.py", "_build_overviews"),
    "  copy to the DEFLATE COG": ("raster.py", "_copy_cog"),
    "  validation + read-back": ("raster.py", "_verify"),
    "write_quicklook": ("quicklook.py", "write_quicklook"),
}


def profile(mirror: Path, mpx: float, top: int) -> None:
    import numpy as np
    from bench_aef import _job

    from changecat.pipeline import make_product
    from generator.kernel import unit_dot_int8

    unit_dot_int8(np.zeros((64, 1, 1), np.int8), np.zeros((64, 1, 1), np.int8))  # numba compile/cache load
    source, job = _job(str(mirror), mpx)
    out = Path(tempfile.mkdtemp(prefix="profile-", dir=mirror.parent))
    # The main thread's own CPU time, not wall time: on a shared machine the wall time of each call mostly
    # measures the other processes. (Waiting for the source's threads then costs next to nothing.)
    profiler = cProfile.Profile(time.thread_time)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        profiler.enable()
        make_product(job, source, out / "product")
        profiler.disable()
    finally:
        source.close()
        shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = pstats.Stats(profiler)
    pixels = job.grid.width * job.grid.height
    shape = f"{job.grid.width}×{job.grid.height}"
    print(f"\n{pixels / 1e6:.1f} Mpx ({shape}): {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; main thread's CPU time by stage:")
    found = {}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for label, (file_end, func) in STAGES.items():
            if filename.endswith(file_end) and name == func:
                found[label] = found.get(label, 0.0) + cumulative
    for label in STAGES:
        if label in found:
            print(f"  {label:<42} {found[label]:7.2f} s")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench"), help="bench_aef.py's --work")
    parser.add_argument("--mpx", type=float, action="append", help="region size(s), Mpx (default 5)")
    parser.add_argument("--top", type=int, default=20, help="cProfile entries to print")
    args = parser.parse_args()
    mirror = args.work / "aef-real-shaped"
    if not (mirror / "aef_index.parquet").is_file():
        sys.exit(f"no mirror at {mirror}: run benchmarks/bench_aef.py --keep-mirror first")
    for mpx in args.mpx or [5.0]:
        profile(mirror, mpx, args.top)


if __name__ == "__main__":
    main()
