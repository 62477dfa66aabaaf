"""The AEF source over HTTP: bytes fetched against the blocks needed, faults (5xx, resets, cut bodies,
stalls) retried to the clean result or failing in bounded time with the cause named, Ctrl-C not hanging.

The server is tests/range_server.py: a real threaded HTTP/1.1 server on 127.0.0.1 with byte ranges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from generator.errors import SourceError
from generator.grid import Grid, grid_for
from generator.sources.aef import AefSource
from generator.synthetic import MirrorSpec, Plant, build_mirror
from tests.range_server import Faults, serve

BOUNDS = (12.02, 52.40, 12.16, 52.47)  # 33N
SPEC = MirrorSpec(
    bounds=BOUNDS,
    years=(2018, 2020),
    tile_size=1024,
    plants=(Plant(box(12.05, 52.41, 12.06, 52.42), year=2020, change=0.5),),
    seed=9,
    block_size=512,  # larger than the writer's 512-px windows on the region's lattice: shared by several
    interleave="BAND",
    noise=60,
)
REGION = box(12.026, 52.404, 12.15, 52.463)  # ~850 × 670 px: several files, cut across their blocks
STALL_S = 2
"""Stall timeout the fault tests set through GDAL's own variable, so a stalled read ends quickly."""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aef-http")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def compute_all(src: AefSource, grid: Grid) -> np.ndarray:
    out = np.full(grid.shape, -1.0, dtype=np.float32)
    for w, values in src.compute(grid, 2018, 2020, "cosine", src.windows(grid)):
        out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    return out


@pytest.fixture(scope="module")
def local(mirror: Path) -> tuple[Grid, np.ndarray]:
    src = AefSource(str(mirror))
    try:
        grid = grid_for(REGION, src.grid_origin("EPSG:32633"))
        return grid, compute_all(src, grid)
    finally:
        src.close()


def needed_bytes(mirror: Path, grid: Grid) -> int:
    """Compressed bytes of every full-resolution block (all bands) of the files that the grid touches."""
    west, south, east, north = grid.bounds
    total = 0
    for path in mirror.glob("*/33N/*.tiff"):
        with rasterio.open(path) as f:
            t = f.transform
            cols = [(x - t.c) / t.a for x in (west, east)]
            rows = [(y - t.f) / t.e for y in (south, north)]
            r0, r1 = max(int(np.floor(min(rows))), 0), min(int(np.ceil(max(rows))), f.height)
            c0, c1 = max(int(np.floor(min(cols))), 0), min(int(np.ceil(max(cols))), f.width)
            if r0 >= r1 or c0 >= c1:
                continue
            bh, bw = f.block_shapes[0]
            for band in range(1, f.count + 1):
                for by in range(r0 // bh, (r1 - 1) // bh + 1):
                    for bx in range(c0 // bw, (c1 - 1) // bw + 1):
                        total += int(f.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=band))
    return total


def test_http_run_fetches_each_needed_block_once(mirror: Path, local: tuple[Grid, np.ndarray]) -> None:
    grid, expected = local
    with serve(mirror) as (url, counters):
        src = AefSource(url)
        try:
            got = compute_all(src, grid)
        finally:
            src.close()
        served, requests = counters.bytes_sent, counters.requests
    np.testing.assert_array_equal(got, expected)
    needed = needed_bytes(mirror, grid)
    assert needed > 20_000_000
    assert served <= 1.2 * needed, f"{served} bytes served in {requests} requests for {needed} needed"


def test_faults_are_retried_to_the_clean_result(mirror: Path, local: tuple[Grid, np.ndarray]) -> None:
    grid, expected = local
    faults = Faults(
        status=0.04,
        reset=0.04,
        cut=0.04,
        stall=0.01,
        stall_s=STALL_S * 3,
        seed=4,
        only=".tiff",
        first=("cut", "status", "reset", "cut", "stall"),  # each kind at least once, whatever the draws
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDAL_HTTP_LOW_SPEED_TIME", str(STALL_S))
        with serve(mirror, faults) as (url, counters):
            src = AefSource(url)
            try:
                got = compute_all(src, grid)
            finally:
                src.close()
    assert all(counters.faults[k] > 0 for k in ("status", "reset", "cut")), counters.faults
    np.testing.assert_array_equal(got, expected)


INDEX_SHAPED = MirrorSpec(
    bounds=(12.02, 52.40, 12.11, 52.43),
    years=(2018, 2020),
    tile_size=2048,  # 8 × 8 blocks of 256 px: a tile index shaped like the public files' (64 × 64 × 64)
    seed=5,
    block_size=256,
    interleave="BAND",
    noise=60,
)
INDEX_REGION = box(12.022, 52.401, 12.10, 52.428)  # 6 units of the files' block lattice
SMALL_CURL_CACHE = 2**20
"""/vsicurl/'s cache in bytes (CPL_VSIL_CURL_CACHE_SIZE, 16 MiB by default): small enough that reading a
few blocks drops the pieces of a file's header, as a long job on the public files does with the default."""


def test_a_cut_response_of_the_tile_index_is_not_taken_as_bands_without_data(tmp_path: Path) -> None:
    """GDAL fetches a file's tile index (TileOffsets/TileByteCounts) in 16 KiB pieces as it needs them;
    given a piece cut short it takes the missing entries as tiles never written and returns those bands
    as nodata without an error (GDAL 3.10: 14 % of this region's pixels wrong). The reader must read
    again (``aef_read.check_bands``)."""
    mirror = tmp_path / "mirror"
    build_mirror(mirror, INDEX_SHAPED)
    src = AefSource(str(mirror))
    grid = grid_for(INDEX_REGION, src.grid_origin("EPSG:32633"))
    try:
        expected = compute_all(src, grid)
    finally:
        src.close()
    cut: list[str] = []

    def when(path: str, start: int, end: int) -> str | None:
        """Cut the first response for a file's first 16 KiB after its open (which fetches 64 KiB): a
        refetch of part of its tile index, once /vsicurl/'s cache has dropped it."""
        if path.endswith(".tiff") and (start, end) == (0, 16384) and not cut:
            cut.append(path)
            return "cut"
        return None

    # In a process of its own: /vsicurl/ sizes its cache once per process, at its first use.
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from generator.sources.aef import AefSource
        from tests.test_aef_remote import INDEX_REGION, compute_all, grid_for

        src = AefSource(sys.argv[1])
        try:
            np.save(sys.argv[2], compute_all(src, grid_for(INDEX_REGION, src.grid_origin("EPSG:32633"))))
        finally:
            src.close()
        """
    )
    env = {**os.environ, "CPL_VSIL_CURL_CACHE_SIZE": str(SMALL_CURL_CACHE)}
    with serve(mirror, Faults(when=when)) as (url, _):
        done = subprocess.run(
            [sys.executable, "-c", script, url, str(tmp_path / "got.npy")],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert cut, "no refetch of a tile index piece was cut: the test no longer exercises the fault"
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), expected)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("stall", rf"timed out after {STALL_S} s"),
        ("reset", "server closed the connection"),
        ("status", "HTTP 503"),
    ],
)
def test_a_failing_server_ends_the_job_in_bounded_time_naming_the_cause(
    mirror: Path, local: tuple[Grid, np.ndarray], fault: str, message: str
) -> None:
    grid, _ = local
    faults = Faults(**{fault: 1.0}, stall_s=600, only=".tiff")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDAL_HTTP_LOW_SPEED_TIME", str(STALL_S))
        mp.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
        with serve(mirror, faults) as (url, _):
            src = AefSource(url)
            start = time.monotonic()
            try:
                with pytest.raises(SourceError, match=message) as info:
                    compute_all(src, grid)
            finally:
                src.close()
            elapsed = time.monotonic() - start
    assert "not recognized as being in a supported file format" not in str(info.value)
    assert ".tiff" in str(info.value), "the message names the file"
    assert elapsed < 120, f"took {elapsed:.0f} s"


READ_FOREVER = textwrap.dedent(
    """
    import sys
    from generator.grid import grid_for
    from generator.sources.aef import AefSource
    from shapely.geometry import box
    src = AefSource(sys.argv[1])
    grid = grid_for(box(*map(float, sys.argv[2:6])), src.grid_origin("EPSG:32633"))
    print("reading", flush=True)
    for _ in src.compute(grid, 2018, 2020, "cosine", src.windows(grid)):
        pass
    """
)


def test_ctrl_c_interrupts_stalled_reads(mirror: Path) -> None:
    """SIGINT while every read is stalled (and the stall timeout is long) ends the process at once."""
    faults = Faults(stall=1.0, stall_s=600, only=".tiff")
    env = {**os.environ, "GDAL_HTTP_LOW_SPEED_TIME": "300"}
    with serve(mirror, faults) as (url, counters):
        proc = subprocess.Popen(
            [sys.executable, "-c", READ_FOREVER, url, *map(str, REGION.bounds)],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A shell's background job starts with SIGINT ignored, and Python then installs no Ctrl-C
            # handler: give the child the default disposition, as an interactive run has.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert proc.stdout.readline().strip() == "reading"
            deadline = time.monotonic() + 60
            while counters.faults["stall"] == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert counters.faults["stall"] > 0, "the reads reached the stalling server"
            proc.send_signal(signal.SIGINT)
            start = time.monotonic()
            _, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert elapsed < 10, f"exit took {elapsed:.1f} s"
