"""A full disk, for real: tmpfs mounts of many sizes under the output. No run may publish a product it could
not write whole; a failed product fails its job with "no space left on device", the run goes on, and a
re-run with more space completes the catalog. Also an output path too long for GDAL."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from changecat.cli import cli
from generator.demo import DEMO_SPEC
from generator.errors import ChangecatError, OutputError
from generator.grid import Grid
from generator.quicklook import write_quicklook
from generator.raster import CogWriter
from generator.synthetic import build_mirror

MIRROR_SPEC = replace(DEMO_SPEC, bounds=(11.92, 52.365, 12.0, 52.42), years=(2017, 2024))
"""The demo mirror cut to one UTM zone and two years (builds in seconds); it keeps the planted forest fire."""

REGIONS = [
    {"id": "small", "bbox": [11.95, 52.38, 11.955, 52.383]},  # 36 × 36 px: one block, no overviews
    {"id": "two-by-two", "bbox": [11.922, 52.368, 11.998, 52.418]},  # 557 × 567 px: four blocks, overviews
]
SIZES_KIB = (4, 16, 48, 96, 160, 240, 280, 288, 296, 320, 640, 1536, 3072, 4608, 6144)
"""From nothing fits to everything fits, for today's writer (needs ~300 KiB here) and for the old one
(which wrote an uncompressed copy of the raster too and needed ~5 MiB)."""
ROOMY_KIB = 16384
SUMMARY = re.compile(r"(\d+) made, (\d+) up to date, (\d+) failed")
MULTIHASH_SHA256 = "1220"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror") / "aef"
    build_mirror(root, MIRROR_SPEC)
    return root


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``tmpfs(size_kib)`` mounts a tmpfs of that size in a new folder under ``tmp_path``; all are
    unmounted at teardown. Skips the test where mounting is not permitted (it needs root/CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def resize(folder: Path, size_kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(folder)], check=True)


def write_config(tmp_path: Path, mirror: Path, output: Path) -> Path:
    catalog = {
        "id": "full-disk",
        "title": "Full disk",
        "description": "On a small tmpfs.",
        "output": str(output),
    }
    config = {
        "catalog": catalog,
        "source": {"kind": "aef", "root": str(mirror)},
        "pairs": [[2017, 2024]],
        "methods": ["cosine"],
        "regions": REGIONS,
    }
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def changecat_run(config: Path, *options: str) -> tuple[int, str, list[str]]:
    """``changecat run CONFIG`` in this process: (exit code, stderr, failure lines). A ChangecatError is
    what ``changecat.cli.main`` prints as one "error:" line with exit code 2; anything else is a crash."""
    result = CliRunner().invoke(cli, ["run", str(config), *options])
    if isinstance(result.exception, ChangecatError):
        return 2, f"error: {result.exception}", []
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    return result.exit_code, result.stderr, failures


def sha256_multihash(path: Path) -> str:
    return MULTIHASH_SHA256 + hashlib.sha256(path.read_bytes()).hexdigest()


def read_every_block(path: Path) -> None:
    """Read every block of every band of the full resolution and of every overview level."""
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
        for _, window in src.block_windows(1):
            src.read(window=window)
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as ovr:
            for _, window in ovr.block_windows(1):
                ovr.read(window=window)


def links(doc: dict, rel: str, base: Path) -> list[Path]:
    return [(base.parent / link["href"]).resolve() for link in doc.get("links", []) if link["rel"] == rel]


def linked_items(catalog: Path) -> dict[str, Path]:
    """Every item the root catalog reaches (root → collections → items), checked as a user would: each
    asset exists with its file:size and file:checksum, each COG passes strict validation and reads whole."""
    root = catalog / "catalog.json"
    if not root.is_file():
        return {}
    items = {}
    for collection in links(json.loads(root.read_text()), "child", root):
        for item_path in links(json.loads(collection.read_text()), "item", collection):
            item = json.loads(item_path.read_text())
            for key, asset in item["assets"].items():
                path = (item_path.parent / asset["href"]).resolve()
                assert path.stat().st_size == asset["file:size"], (item["id"], key)
                assert sha256_multihash(path) == asset["file:checksum"], (item["id"], key)
                if path.suffix == ".tif":
                    assert cog_validate(path, strict=True, quiet=True)[:2] == (True, []), path
                    read_every_block(path)
            items[item["id"]] = item_path
    return items


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith((".tmp-", ".staging-"))]


@pytest.mark.parametrize("size_kib", SIZES_KIB)
def test_a_full_disk_fails_jobs_cleanly_and_never_publishes_a_broken_product(
    tmp_path: Path, mirror: Path, tmpfs: Callable[[int], Path], size_kib: int
) -> None:
    disk = tmpfs(size_kib)
    catalog = disk / "catalog"
    config = write_config(tmp_path, mirror, catalog)
    code, stderr, failures = changecat_run(config)
    summary = SUMMARY.search(stderr)
    if summary is None:  # stopped before any job: one clear error, nothing published
        assert code == 2 and "no space left on device" in stderr.lower(), stderr
        made = failed = 0
    else:
        made, skipped, failed = map(int, summary.groups())
        assert skipped == 0 and made + failed == len(REGIONS), stderr  # every job ran and is reported
        assert (code != 0) == (failed > 0), stderr
        assert len(failures) == failed
        for line in failures:
            assert "no space left on device" in line.lower(), line
    items = linked_items(catalog)
    assert len(items) == made
    assert leftovers(disk) == []

    resize(disk, ROOMY_KIB)
    code, stderr, failures = changecat_run(config)
    assert code == 0, stderr
    remade, up_to_date, failed = map(int, SUMMARY.search(stderr).groups())
    # A product whose item folder was switched in before its collection could be written (the disk filled
    # up between the two) failed its job, but is whole: the re-run finds it up to date and links it.
    assert failed == 0 and remade + up_to_date == len(REGIONS) and up_to_date >= made, stderr
    assert sorted(linked_items(catalog)) == sorted(f"{r['id']}_2017_2024_cosine" for r in REGIONS)
    assert leftovers(disk) == []


def fill(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` to the last byte with one file; return it."""
    filler = disk / "filler"
    with pytest.raises(OSError) as info, filler.open("wb") as f:
        while True:
            f.write(bytes(65536))
            f.flush()
    assert info.value.errno == errno.ENOSPC
    return filler


def test_a_disk_that_fills_up_after_a_run_keeps_the_catalog_and_says_so(
    tmp_path: Path, mirror: Path, tmpfs: Callable[[int], Path]
) -> None:
    """Nothing can be written: every job fails with the reason, the run ends with its summary (no GDAL or
    Python traceback), the products of the earlier run stay linked and whole, and freeing space is enough."""
    disk = tmpfs(ROOMY_KIB)
    catalog = disk / "catalog"
    config = write_config(tmp_path, mirror, catalog)
    assert changecat_run(config)[0] == 0
    before = {item: path.read_bytes() for item, path in linked_items(catalog).items()}
    filler = fill(disk)
    code, stderr, failures = changecat_run(config, "--force")
    if code == 2:  # refused before any job, in one clear line
        assert stderr.startswith("error: ") and "no space left on device" in stderr.lower(), stderr
    else:
        assert code == 1 and f"0 made, 0 up to date, {len(REGIONS)} failed" in stderr, stderr
        assert len(failures) == len(REGIONS)
        assert all("no space left on device" in line.lower() for line in failures), failures
    assert {item: path.read_bytes() for item, path in linked_items(catalog).items()} == before
    assert leftovers(disk) == []
    filler.unlink()
    code, stderr, _ = changecat_run(config)
    assert code == 0 and "0 failed" in stderr, stderr


def test_an_output_path_too_long_for_gdal_fails_each_job_with_the_limit(tmp_path: Path, mirror: Path) -> None:
    """Old behaviour: a GDAL "Destination buffer too small" traceback ended the run."""
    output = tmp_path
    while len(os.fsencode(output)) < 1950:
        output = output / ("o" * 200)
    output.mkdir(parents=True)
    code, stderr, failures = changecat_run(write_config(tmp_path, mirror, output / "catalog"))
    assert code == 1, stderr
    assert f"0 made, 0 up to date, {len(REGIONS)} failed" in stderr
    for line in failures:
        assert re.search(
            r"change\.tif: the path is \d+ bytes long; GDAL handles paths up to 2038 bytes", line
        ), line
        assert "this file's path may have at most 2013 bytes: choose a shorter output folder" in line


# --- the writer alone, on sizes around what it needs ------------------------------------------------------


def noisy_grid(side: int = 1024) -> tuple[Grid, np.ndarray]:
    """Change values that compress like real ones (smooth field + pixel noise), NaN outside a disc."""
    grid = Grid("EPSG:32633", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5800000.0), side, side)
    rows, cols = np.mgrid[0:side, 0:side]
    rng = np.random.default_rng(6)
    values = (0.05 + 0.03 * np.sin(rows / 53.0) + rng.normal(0, 0.02, (side, side))).astype(np.float32)
    values[(rows - side / 2) ** 2 + (cols - side / 2) ** 2 > (side / 2) ** 2] = np.nan
    return grid, values


def write(path: Path, grid: Grid, values: np.ndarray) -> None:
    with CogWriter(path, grid) as writer:
        for window in grid.windows():
            writer.write(window, values[window.toslices()])


def test_the_writer_on_a_full_disk_reports_it_with_the_path_or_writes_a_whole_cog(
    tmp_path: Path, tmpfs: Callable[[int], Path]
) -> None:
    """Sizes from nothing to enough, then 4 KiB steps (tmpfs pages) just below the least size that works.
    There GDAL writes all but the last tiles of the COG and reports success (libtiff prints the error to
    stderr, GDAL's flush on close ignores it): the old writer published such COGs."""
    grid, values = noisy_grid()

    def attempt(size_kib: int) -> str | None:
        """None if a whole COG was written, else the error."""
        disk = tmpfs(size_kib)
        path = disk / "change.tif"
        try:
            write(path, grid, values)
        except OutputError as exc:
            assert str(exc).startswith(f"{path}: no space left on device in {disk} ("), exc
            assert list(disk.iterdir()) == []  # no temporary, no partial COG
            return str(exc)
        assert list(disk.iterdir()) == [path]
        assert cog_validate(path, strict=True, quiet=True)[:2] == (True, [])
        read_every_block(path)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(1), values)
        return None

    for size in (8, 64, 512, 1024, 2048):
        attempt(size)
    low, high = 4, 16384  # the least size that works lies in (low, high]
    assert attempt(high) is None
    while high - low > 4:
        middle = (low + high) // 8 * 4
        low, high = (low, middle) if attempt(middle) is None else (middle, high)
    near = [attempt(size) for size in range(high - 4, high - 64, -4)]
    assert None not in near
    # Here the only sign of the full disk is a COG that does not read back whole.
    assert any("while trying to verify the COG written (read every block back)" in m for m in near), near


def test_a_quicklook_on_a_full_disk_raises_and_leaves_no_temporary(
    tmp_path: Path, tmpfs: Callable[[int], Path]
) -> None:
    """The PNG is written after the COG; on a full disk it must raise (the pipeline fails the job on any
    OSError) rather than leave a truncated image."""
    grid, values = noisy_grid(512)
    cog = tmp_path / "change.tif"
    write(cog, grid, values)
    disk = tmpfs(4)
    with pytest.raises(OSError) as info:
        write_quicklook(cog, disk / "thumbnail.png")
    assert info.value.errno == errno.ENOSPC or "no space left on device" in str(info.value).lower()
    assert [p for p in disk.iterdir() if p.name.startswith(".tmp-")] == []
