"""Speed and memory of the AEF path on files shaped like the real ones; prints one table side by side.

The mirror (built once under --work, reused) has the public files' shape: 8192² px files, 1024-px internal
blocks, 64 bands int8 band-interleaved, ZSTD, bottom-up, and per-pixel noisy vectors (int8 values that vary
from pixel to pixel, compressing about 1.1× like real embeddings). Only the blocks inside its bounds are
stored (the rest is sparse nodata), so it takes ~12 GB rather than 4 GB per file; it is deleted at the end
unless --keep-mirror (then the next run reuses it).

For each region size, each measure runs in a fresh process (its peak RSS is its own):
- decode: every needed 64-band block of both years read once by 2 threads — the I/O + decoding limit;
- source: changecat's AEF source computing every window (the part this benchmark is about);
- product: a whole ``make_product`` (source + COG writing + statistics + quicklook);
- naive: the baseline the issue names, as a new user writes it: each year's files warped onto the grid
  whole (rasterio WarpedVRT, nearest: it handles the bottom-up files), float32 de-quantized whole arrays,
  einsum, the COG made in memory with rio-cogeo (up to 25 Mpx: ~15 GB at 25 Mpx);
- naive-lut: a stronger baseline (up to 5 Mpx): the same whole arrays read with changecat's own block
  reader and de-quantized through a lookup table.
Then the middle region is served by a local HTTP range server (tests/range_server.py) and computed by the
source over HTTP: requests and bytes fetched against the compressed bytes of the blocks needed.

Each row gives wall time, Mpx/s, the ratio to decode's Mpx/s, the CPU time of the measure's process (all its
threads: on a machine shared with other work, wall times mostly measure the others, CPU time does not)
and peak RSS; the load averages before and after say how shared the machine was. Decode runs twice and
the faster run counts (the first may read the mirror from disk, the later measures find it in the page
cache). Both naive baselines do less than the product (no statistics, hotspots or quicklook).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator.synthetic import MirrorSpec, Plant, build_mirror  # noqa: E402

LAT = 52.0
LON = 13.3
SIZES_MPX = (5.0, 25.0, 100.0)
NAIVE_MAX_MPX = 25.0
"""The naive baselines hold both years as float32 whole arrays (2 × 64 × 4 B = 512 B per pixel): 25 Mpx
needs ~15 GB with the int8 arrays read, what this 24 GiB machine can hold when nothing else runs."""
NAIVE_LUT_MAX_MPX = 5.0
HTTP_MPX = 25.0
EDGE_M = 3000.0
"""Regions start this far inside the mirror, off the files' block lattice."""
SPEC = MirrorSpec(
    bounds=(LON, LAT, LON + 1.55, LAT + 0.93),  # ~105 km × 103 km: room for the 100 Mpx region
    years=(2017, 2024),
    tile_size=8192,
    plants=(Plant(box(LON + 0.1, LAT + 0.1, LON + 0.3, LAT + 0.2), year=2024, change=0.4),),
    seed=1,
    block_size=1024,
    interleave="BAND",
    noise=60,
)
YEARS = (2017, 2024)


def region_for(mpx: float) -> tuple[float, float, float, float]:
    """A square lon/lat box of about ``mpx`` megapixels at 10 m, inside the mirror."""
    side_m = math.sqrt(mpx * 1e6) * 10.0
    dlat = side_m / 111_320.0
    lat0 = LAT + EDGE_M / 111_320.0
    dlon = side_m / (111_320.0 * math.cos(math.radians(lat0 + dlat / 2)))
    lon0 = LON + EDGE_M / (111_320.0 * math.cos(math.radians(lat0)))
    return (lon0, lat0, lon0 + dlon, lat0 + dlat)


def _job(root: str, mpx: float):
    from generator.plan import Region, make_jobs
    from generator.sources.aef import AefSource

    source = AefSource(root)
    region = Region("bench", "bench", box(*region_for(mpx)))
    job = make_jobs((region,), [YEARS], ("cosine",), source.grid_origin)[0]
    return source, job


def needed_blocks(mirror: Path, grid) -> list[tuple[Path, tuple[int, int, int, int], int]]:
    """(file, block window (col, row, width, height), compressed bytes of all bands) of every block the
    grid touches, both years."""
    import rasterio

    west, south, east, north = grid.bounds
    out = []
    for path in sorted(mirror.glob("*/*/*.tiff")):
        with rasterio.open(path) as f:
            t = f.transform
            cols = [(x - t.c) / t.a for x in (west, east)]
            rows = [(y - t.f) / t.e for y in (south, north)]
            r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), f.height)
            c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), f.width)
            bh, bw = f.block_shapes[0]
            for by in range(r0 // bh, (r1 - 1) // bh + 1) if r0 < r1 and c0 < c1 else ():
                for bx in range(c0 // bw, (c1 - 1) // bw + 1):
                    size = sum(
                        int(f.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=b) or 0)
                        for b in range(1, f.count + 1)
                    )
                    window = (bx * bw, by * bh, min(bw, f.width - bx * bw), min(bh, f.height - by * bh))
                    out.append((path, window, size))
    return out


def measure(kind: str, root: str, mpx: float, out: Path) -> dict:
    """One measure in this (fresh) process."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from generator.kernel import unit_dot_int8

    # Compile (or load from numba's on-disk cache) the kernel before timing: a one-time cost per install.
    unit_dot_int8(np.zeros((64, 1, 1), np.int8), np.zeros((64, 1, 1), np.int8))
    source, job = _job(root, mpx)
    grid = job.grid
    start = time.perf_counter()
    cpu_start = time.process_time()
    extra: dict = {}
    if kind == "decode":
        blocks = needed_blocks(Path(root), grid)
        local = threading.local()

        def read(item) -> int:
            path, (c, r, w, h), _ = item
            cache = local.__dict__.setdefault("open", {})
            if path not in cache:
                cache[path] = rasterio.open(path)
            return int(cache[path].read(window=Window(c, r, w, h)).shape[0])

        with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), ThreadPoolExecutor(2) as pool:
            list(pool.map(read, blocks))
        extra["blocks"] = len(blocks)
    elif kind == "source":
        for _ in source.compute(grid, *YEARS, "cosine", source.windows(grid)):
            pass
    elif kind == "product":
        from changecat.pipeline import make_product

        make_product(job, source, out)
    elif kind == "naive":
        _naive(Path(root), grid, out)
    elif kind == "naive-lut":
        _naive_lut(source, grid, out)
    elif kind == "http":
        sys.path.insert(0, str(REPO))
        from tests.range_server import serve

        with serve(Path(root)) as (url, counters):
            from generator.sources.aef import AefSource

            remote = AefSource(url)
            start = time.perf_counter()
            for _ in remote.compute(grid, *YEARS, "cosine", remote.windows(grid)):
                pass
            remote.close()
            extra = {"requests": counters.requests, "bytes": counters.bytes_sent}
        extra["needed"] = sum(size for *_, size in needed_blocks(Path(root), grid))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # every thread of this process, GDAL's included
    source.close()
    pixels = grid.width * grid.height
    del np
    return {
        "kind": kind,
        "mpx": pixels / 1e6,
        "wall_s": wall,
        "cpu_s": cpu,
        "mpx_per_s": pixels / 1e6 / wall,
        "peak_rss_mib": peak_rss_mib(),
        **extra,
    }


def load() -> str:
    """The machine's load averages: on a shared machine, the wall times mean little without them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM (Linux) rather than ru_maxrss, which a child started by
    fork + exec inherits from its parent (here: the mirror builder's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _naive(mirror: Path, grid, out: Path) -> None:
    """The issue's baseline, as a new user writes it: whole arrays warped from each file, float32,
    einsum, rio-cogeo in memory."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    def year_stack(year: int) -> np.ndarray:
        stack = np.full((64, grid.height, grid.width), -128, dtype=np.int8)
        for path in sorted((mirror / str(year)).rglob("*.tiff")):
            with (
                rasterio.open(path) as src,
                WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling.nearest,
                    src_nodata=-128,
                    nodata=-128,
                ) as vrt,
            ):
                data = vrt.read()
            np.copyto(stack, data, where=(stack[0] == -128) & (data[0] != -128))
            del data
        values = stack.astype(np.float32)
        values[:, stack[0] == -128] = np.nan
        del stack
        for band in values:  # x = (v / 127.5)² · sign(v), band by band to spare a temporary
            band /= 127.5
            band *= np.abs(band)
        return values

    a = year_stack(YEARS[0])
    b = year_stack(YEARS[1])
    dot = np.einsum("bij,bij->ij", a, b) / np.sqrt(
        np.einsum("bij,bij->ij", a, a) * np.einsum("bij,bij->ij", b, b)
    )
    del a, b
    _cog_in_memory((1.0 - dot).astype(np.float32), grid, out)


def _naive_lut(source, grid, out: Path) -> None:
    """A stronger baseline: whole arrays read with changecat's block reader, a lookup table, einsum."""
    import numpy as np
    from rasterio.windows import Window

    from generator.methods import dequantize_lut

    lut = dequantize_lut()
    whole = Window(0, 0, grid.width, grid.height)
    reader = source._job_reader()
    a = lut[source._mosaic(reader, grid, whole, YEARS[0]).view(np.uint8)]
    b = lut[source._mosaic(reader, grid, whole, YEARS[1]).view(np.uint8)]
    dot = np.einsum("bij,bij->ij", a, b) / np.sqrt(
        np.einsum("bij,bij->ij", a, a) * np.einsum("bij,bij->ij", b, b)
    )
    _cog_in_memory((1.0 - dot).astype(np.float32), grid, out)


def _cog_in_memory(change, grid, out: Path) -> None:
    """The change array written as a DEFLATE COG with rio-cogeo, from a GeoTIFF in memory."""
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    profile = dict(
        driver="GTiff",
        dtype="float32",
        count=1,
        width=grid.width,
        height=grid.height,
        crs=grid.crs,
        transform=grid.transform,
        nodata=float("nan"),
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(change, 1)
        with mem.open() as src:
            cog_translate(
                src, str(out / "naive.tif"), cog_profiles.get("deflate"), in_memory=True, quiet=True
            )


def run_child(work: Path, kind: str, mpx: float) -> dict:
    out = work / f"out-{kind}-{mpx:g}"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--work", str(work), "--child", kind, str(mpx)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"kind": kind, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench"), help="folder for mirror and output")
    parser.add_argument("--sizes", type=float, nargs="+", default=SIZES_MPX, help="region sizes in Mpx")
    parser.add_argument(
        "--naive-max", type=float, default=NAIVE_MAX_MPX, help="largest region of the naive baseline, Mpx"
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measure")
    parser.add_argument(
        "--keep-mirror", action="store_true", help="keep the ~12 GB mirror for the next run (else deleted)"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mirror = args.work / "aef-real-shaped"
    if args.child:
        kind, mpx = args.child[0], float(args.child[1])
        print(json.dumps(measure(kind, str(mirror), mpx, args.work / f"out-{kind}-{mpx:g}")))
        return
    begin = time.perf_counter()
    if not (mirror / "aef_index.parquet").is_file():
        start = time.perf_counter()
        build_mirror(mirror, SPEC)
        size = sum(p.stat().st_blocks * 512 for p in mirror.rglob("*.tiff")) / 2**30
        print(f"built the mirror in {time.perf_counter() - start:.0f} s: {mirror} ({size:.1f} GiB on disk)")
    print(f"load average (1, 5, 15 min) before: {load()}")
    header = (
        f"{'region':>9} {'measure':>9} {'wall':>8} {'Mpx/s':>7} {'× decode':>9} {'CPU':>8} {'peak RSS':>9}"
    )
    print(header)
    for mpx in args.sizes:
        kinds = ["source", "product"] + (["naive"] if mpx <= args.naive_max else [])
        kinds += ["naive-lut"] if mpx <= NAIVE_LUT_MAX_MPX else []
        decodes = [run_child(args.work, "decode", mpx) for _ in range(2)]
        results = {"decode": min(decodes, key=lambda r: r.get("wall_s", math.inf))}
        results |= {k: run_child(args.work, k, mpx) for k in kinds}
        decode = results["decode"].get("mpx_per_s")
        for kind, r in results.items():
            if "error" in r:
                print(f"{mpx:7.0f}Mpx {kind:>9} failed: {r['error']}")
                continue
            ratio = f"{r['mpx_per_s'] / decode:8.2f}×" if decode else ""
            print(
                f"{r['mpx']:6.1f}Mpx {kind:>9} {r['wall_s']:7.1f}s {r['mpx_per_s']:7.2f} {ratio:>9} "
                f"{r['cpu_s']:7.1f}s {r['peak_rss_mib']:6.0f}MiB"
            )
        for naive in ("naive", "naive-lut"):
            if naive in results and "error" not in results[naive] and "error" not in results["product"]:
                speedup = results[naive]["wall_s"] / results["product"]["wall_s"]
                cpu = results[naive]["cpu_s"] / results["product"]["cpu_s"]
                print(f"{'':9} product is {speedup:.1f}× faster than {naive} (wall), {cpu:.1f}× less CPU")
    if not args.no_http:
        r = run_child(args.work, "http", HTTP_MPX)
        if "error" in r:
            print(f"HTTP: failed: {r['error']}")
        else:
            print(
                f"HTTP {r['mpx']:.1f} Mpx: {r['wall_s']:.1f} s, {r['requests']} requests, "
                f"{r['bytes'] / 1e9:.2f} GB fetched for {r['needed'] / 1e9:.2f} GB of blocks needed "
                f"({r['bytes'] / r['needed']:.2f}×), peak RSS {r['peak_rss_mib']:.0f} MiB"
            )
    for out in args.work.glob("out-*"):
        shutil.rmtree(out, ignore_errors=True)
    if not args.keep_mirror:
        shutil.rmtree(mirror, ignore_errors=True)
    print(f"load average (1, 5, 15 min) after: {load()}")
    print(f"benchmark took {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
