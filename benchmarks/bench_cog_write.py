"""Stream file → COG: the old two-compression path (rio-cogeo) against one-pass GDAL paths (issue 7).

Writes one ~25 Mpx float32 stream file of realistic noisy change values (the CogWriter's intermediate:
512-px tiles, DEFLATE level 1, floating-point predictor, NaN outside the region), then turns it into a COG
with each approach, each in a fresh process (so its peak RSS is its own), best of ``--repeat`` runs. For
each it prints wall time, the ratio to today's path, peak RSS, peak scratch disk (temporaries + output,
sampled every 10 ms), the COG's size, ``cog_validate(strict=True)`` and whether every block of every
level reads back equal to the other approaches' (same pixels, same overview pixels). The machine is shared,
so compare the ratios rather than the absolute times.

    .venv/bin/python benchmarks/bench_cog_write.py [--side 5000] [--repeat 3] [--work build/bench-cog]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BLOCK = 512
APPROACHES = (
    "rio-cogeo",
    "rio-cogeo-cog-driver",
    "overviews-in-stream",
    "cog-driver",
    "cog-driver-2-threads",
)


def make_stream(path: Path, side: int) -> None:
    """The CogWriter's intermediate for a side×side grid, written block by block (bounded memory)."""
    profile = dict(
        driver="GTiff", width=side, height=side, count=1, dtype="float32", nodata=float("nan"),
        crs="EPSG:32633", transform=Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 5900000.0), tiled=True,
        blockxsize=BLOCK, blockysize=BLOCK, sparse_ok=True, compress="DEFLATE", zlevel=1, predictor=3,
        BIGTIFF="IF_SAFER",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, side, BLOCK):
            for c0 in range(0, side, BLOCK):
                rows, cols = min(BLOCK, side - r0), min(BLOCK, side - c0)
                rr, cc = np.mgrid[r0 : r0 + rows, c0 : c0 + cols].astype(np.float32)
                rng = np.random.default_rng(r0 * side + c0)
                # 1 − a·b of noisy int8 embeddings: a smooth background of small change, pixel noise,
                # a planted patch of strong change, NaN outside an elliptical region.
                values = 0.05 + 0.03 * np.sin(rr / 97.0) * np.cos(cc / 61.0)
                values = values + rng.normal(0.0, 0.02, (rows, cols)).astype(np.float32)
                values[(rr - side / 3) ** 2 + (cc - side / 2) ** 2 < (side / 10) ** 2] += 0.45
                values = np.abs(values).astype(np.float32)
                outside = ((rr - side / 2) / (side * 0.55)) ** 2 + ((cc - side / 2) / (side * 0.5)) ** 2 > 1
                values[outside] = np.nan
                dst.write(values, 1, window=Window(c0, r0, cols, rows))


def overview_count(side: int) -> int:
    levels = 0
    while side > BLOCK * 2**levels:
        levels += 1
    return levels


def finish(approach: str, stream: Path, cog: Path) -> None:
    """One approach: ``stream`` → COG at ``cog`` (GDAL cache 64 MB, as in generator/raster.py)."""
    levels = overview_count(rasterio.open(stream).width)
    with rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024, GDAL_TIFF_OVR_BLOCKSIZE=str(BLOCK)):
        if approach.startswith("rio-cogeo"):
            from rio_cogeo.cogeo import cog_translate
            from rio_cogeo.profiles import cog_profiles

            profile = cog_profiles.get("deflate")
            profile.update(blockxsize=BLOCK, blockysize=BLOCK, predictor=3, BIGTIFF="IF_SAFER")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cog_translate(
                    stream, cog, profile, nodata=float("nan"), overview_level=levels,
                    overview_resampling="average", in_memory=False, quiet=True,
                    use_cog_driver=approach == "rio-cogeo-cog-driver",
                )  # fmt: skip
        elif approach == "overviews-in-stream":
            from rasterio.enums import Resampling
            from rasterio.shutil import copy

            with rasterio.open(stream, "r+") as ds:
                ds.build_overviews([2**k for k in range(1, levels + 1)], Resampling.average)
                ds.update_tags(OVERVIEW_RESAMPLING="AVERAGE")
            copy(
                stream, cog, driver="GTiff", copy_src_overviews=True, tiled=True, blockxsize=BLOCK,
                blockysize=BLOCK, compress="DEFLATE", predictor=3, BIGTIFF="IF_SAFER",
            )  # fmt: skip
        else:
            from rasterio.shutil import copy

            copy(
                stream, cog, driver="COG", blocksize=BLOCK, compress="DEFLATE", predictor="YES",
                overview_resampling="AVERAGE", overview_count=levels, BIGTIFF="IF_SAFER",
                num_threads=2 if approach.endswith("2-threads") else 1,
            )  # fmt: skip


def read_back(cog: Path) -> str:
    """Read every block of every level; return a digest of all pixels (NaN-safe)."""
    digest = hashlib.sha256()
    with rasterio.open(cog) as src:
        levels = len(src.overviews(1))
    for level in [None, *range(levels)]:
        with rasterio.open(cog, overview_level=level) as src:
            for _, window in src.block_windows(1):
                digest.update(np.nan_to_num(src.read(1, window=window), nan=-1.0).tobytes())
    return digest.hexdigest()


def disk_usage(folder: Path) -> int:
    return sum(e.stat().st_blocks * 512 for e in os.scandir(folder) if e.is_file())


def child(approach: str, stream: Path, work: Path) -> dict:
    """Run one approach in this process; time it, sample scratch disk, then check the result."""
    folder = work / f"run-{approach}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    local = folder / "stream.tif"
    shutil.copyfile(stream, local)  # "overviews-in-stream" modifies it
    base = disk_usage(folder)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], disk_usage(folder) - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    finish(approach, local, folder / "cog.tif")
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    from rio_cogeo.cogeo import cog_validate

    valid, errors, cog_warnings = cog_validate(folder / "cog.tif", strict=True, quiet=True)
    start = time.perf_counter()
    digest = read_back(folder / "cog.tif")
    read_s = time.perf_counter() - start
    result = {
        "approach": approach,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_scratch_mb": max(peak[0], disk_usage(folder) - base) / 1e6,
        "cog_mb": (folder / "cog.tif").stat().st_size / 1e6,
        "valid": valid,
        "problems": errors + cog_warnings,
        "read_back_s": read_s,
        "digest": digest,
    }
    shutil.rmtree(folder)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=5000, help="grid side in px (5000 = 25 Mpx)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per approach; the best counts")
    parser.add_argument("--work", type=Path, default=Path("build/bench-cog"))
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stream = args.work / f"stream-{args.side}.tif"
    if args.child:
        print(json.dumps(child(args.child, stream, args.work)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not stream.is_file():
        start = time.perf_counter()
        make_stream(stream, args.side)
        print(
            f"stream file {args.side}×{args.side} written in {time.perf_counter() - start:.1f} s", flush=True
        )
    print(f"stream file: {stream.stat().st_size / 1e6:.1f} MB, {args.side**2 / 1e6:.1f} Mpx float32")
    best: dict[str, dict] = {}
    for run in range(args.repeat):
        for approach in args.approaches.split(","):
            command = [sys.executable, __file__, "--side", str(args.side), "--work", str(args.work)]
            out = subprocess.run([*command, "--child", approach], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  run {run + 1} {approach}: {result['wall_s']:.2f} s", flush=True)
            if approach not in best or result["wall_s"] < best[approach]["wall_s"]:
                best[approach] = result
    reference = best.get("rio-cogeo")
    digests = {r["digest"] for r in best.values()}
    print(
        f"\n{'approach':<22} {'best s':>7} {'× today':>8} {'RSS MB':>7} {'scratch MB':>10} {'COG MB':>7} "
        f"{'strict':>6} {'read-back s':>11}  same pixels"
    )
    for approach, r in best.items():
        ratio = r["wall_s"] / reference["wall_s"] if reference else float("nan")
        same = "yes" if reference and r["digest"] == reference["digest"] else "NO"
        print(
            f"{approach:<22} {r['wall_s']:>7.2f} {ratio:>8.2f} {r['peak_rss_mb']:>7.0f} "
            f"{r['peak_scratch_mb']:>10.1f} {r['cog_mb']:>7.1f} {r['valid']!s:>6} "
            f"{r['read_back_s']:>11.2f}  {same}" + (f"  {r['problems']}" if r["problems"] else "")
        )
    print(f"distinct pixel digests: {len(digests)} (× today = time / rio-cogeo's time; < 1 is faster)")


if __name__ == "__main__":
    main()
