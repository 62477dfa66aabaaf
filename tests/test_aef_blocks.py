"""The AEF source on real-shaped files: noisy per-pixel int8 vectors, band interleave, blocks unlike the
writer's, bottom-up and top-down files, years with different block sizes. Results must equal the
straightforward per-pixel formula on the files' own values, whatever the windows and lattices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from generator.grid import BLOCK_SIZE, Grid, grid_for
from generator.kernel import unit_dot_int8
from generator.methods import METHODS
from generator.sources.aef import AefSource
from generator.sources.aef_blocks import Lattice, file_lattice, group_units, windows_on
from generator.synthetic import NODATA, MirrorSpec, Plant, build_mirror

PLANT = Plant(box(12.031, 52.403, 12.036, 52.407), year=2020, change=0.3)
BOUNDS = (12.02, 52.40, 12.05, 52.415)  # inside 33N only
REGION = box(12.0235, 52.4012, 12.0462, 52.4131)  # crosses file edges and blocks of both lattices


def spec(bottom_up: bool) -> MirrorSpec:
    return MirrorSpec(
        bounds=BOUNDS,
        years=(2018, 2020),
        tile_size=96,  # not a multiple of 64: partial blocks along the files' far edges
        plants=(PLANT,),
        seed=5,
        block_size=32,
        year_block_sizes=((2020, 64),),
        interleave="BAND",
        bottom_up=bottom_up,
        noise=50,
    )


@pytest.fixture(scope="module", params=[True, False], ids=["bottom-up", "top-down"])
def mirror(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("aef-real-shaped")
    build_mirror(root, spec(request.param))
    yield root


def compute_all(src: AefSource, grid: Grid, method: str, windows: list) -> np.ndarray:
    out = np.full(grid.shape, -1.0, dtype=np.float32)
    for w, values in src.compute(grid, 2018, 2020, method, windows):
        out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    assert not (out == -1.0).any(), "every window is computed"
    return out


def stacks_on_grid(mirror: Path, grid: Grid, year: int) -> np.ndarray:
    """The int8 values of every file of a year placed on the grid by their georeferencing (−128 where
    none), read whole and independently of the source's reader."""
    out = np.full((64, grid.height, grid.width), NODATA, dtype=np.int8)
    for path in sorted(mirror.glob(f"{year}/33N/*.tiff")):
        with rasterio.open(path) as f:
            data, t = f.read(), f.transform
        if t.e > 0:  # bottom-up: flip to north-up
            data, top = data[:, ::-1], t.f + t.e * f.height
        else:
            top = t.f
        row0 = round((grid.transform.f - top) / 10)
        col0 = round((t.c - grid.transform.c) / 10)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + f.height, grid.height), min(col0 + f.width, grid.width)
        if r0 < r1 and c0 < c1:
            out[:, r0:r1, c0:c1] = data[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
    return out


def exact(v: np.ndarray) -> np.ndarray:
    """AEF de-quantization in float64: (v / 127.5)**2 * sign(v)."""
    v = v.astype(np.float64)
    return (v / 127.5) ** 2 * np.sign(v)


def per_pixel(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    """The formula as written: de-quantize, renormalize, dot, pixel by pixel (float64)."""
    out = np.full(a.shape[1:], np.nan)
    for r in range(a.shape[1]):
        for c in range(a.shape[2]):
            va, vb = a[:, r, c], b[:, r, c]
            if (va == NODATA).all() or (vb == NODATA).all():
                continue
            x, y = exact(va), exact(vb)
            out[r, c] = METHODS[method].from_dot(np.array([x @ y / np.sqrt((x @ x) * (y @ y))]))[0]
    return out


@pytest.mark.parametrize("method", ["cosine", "angle"])
def test_real_shaped_files_give_the_per_pixel_formula(mirror: Path, method: str) -> None:
    src = AefSource(str(mirror))
    try:
        grid = grid_for(REGION, src.grid_origin("EPSG:32633"))
        windows = src.windows(grid)
        values = compute_all(src, grid, method, windows)
        on_grid_lattice = compute_all(src, grid, method, list(grid.windows()))
    finally:
        src.close()
    a, b = stacks_on_grid(mirror, grid, 2018), stacks_on_grid(mirror, grid, 2020)
    truth = per_pixel(a, b, method)
    assert np.isfinite(truth).mean() > 0.9
    np.testing.assert_allclose(values, truth, atol=1e-6, rtol=0, equal_nan=True)
    np.testing.assert_array_equal(values, on_grid_lattice)
    # The windows followed the files' lattice, not the grid's: some are cut short of 512 px by file blocks.
    assert any(w.col_off % BLOCK_SIZE or w.row_off % BLOCK_SIZE for w in windows)
    assert sum(w.width * w.height for w in windows) == grid.width * grid.height


def test_windows_fall_inside_one_file_block_cell_and_one_writer_tile() -> None:
    grid = grid_for(REGION, (0.0, 0.0))
    lattice = Lattice(col_phase=300, col_size=1024, row_phase=77, row_size=1024)
    grid = Grid(grid.crs, grid.transform, 2500, 1800)
    windows = windows_on(lattice, grid)
    covered = np.zeros(grid.shape, dtype=np.int32)
    for w in windows:
        r0, c0 = int(w.row_off), int(w.col_off)
        covered[r0 : r0 + w.height, c0 : c0 + w.width] += 1
        last_r, last_c = r0 + int(w.height) - 1, c0 + int(w.width) - 1
        assert lattice.cell_of(r0, c0) == lattice.cell_of(last_r, last_c), w
        assert (r0 // BLOCK_SIZE, c0 // BLOCK_SIZE) == (last_r // BLOCK_SIZE, last_c // BLOCK_SIZE), w
    assert (covered == 1).all(), "the windows tile the grid exactly"
    units = group_units(lattice, windows)
    assert len(units) == 4 * 3  # cells: columns cut at 300, 1324, 2348; rows at 77, 1101
    assert max(u.width for u, _ in units) == 1024 and max(u.height for u, _ in units) == 1024


def test_file_lattice_of_bottom_up_and_top_down_files() -> None:
    grid = Grid("EPSG:32633", rasterio.Affine(10, 0, 1000, 0, -10, 50_000), 4000, 4000)
    # Bottom-up file whose southern edge (row 0) lies 3000 grid rows down: its blocks start there.
    bottom_up = rasterio.Affine(10, 0, 1000 - 10 * 5, 0, 10, 50_000 - 10 * 3000)
    assert file_lattice(bottom_up, (1024, 1024), grid) == Lattice(1019, 1024, 3000 % 1024, 1024)
    top_down = rasterio.Affine(10, 0, 1000 + 10 * 7, 0, -10, 50_000 - 10 * 10)
    assert file_lattice(top_down, (256, 512), grid) == Lattice(7, 1024, 10, 1024)
    off_lattice = rasterio.Affine(10, 0, 1003, 0, -10, 50_000)
    assert file_lattice(off_lattice, (1024, 1024), grid) is None


def test_kernel_matches_the_formula_on_extremes() -> None:
    """Every int8 value, nodata pixels, zero-length vectors and strided (flipped) views."""
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (64, 40, 33), dtype=np.int16).astype(np.int8)
    b = rng.integers(-128, 128, (64, 40, 33), dtype=np.int16).astype(np.int8)
    a[:, 0, 0] = NODATA  # nodata in a
    b[:, 1, 1] = NODATA  # nodata in b
    a[:, 2, 2] = 0  # zero length
    b[:, 3, 3] = a[:, 3, 3]  # identical: cosine exactly 1
    a[5, 4, 4] = NODATA  # one band at −128 is a value, not nodata
    # The largest sums (−128² per band: 63 × 16384² overflows int32): opposite and equal vectors.
    a[:, 5, 5], b[:, 5, 5] = NODATA, 127
    a[0, 5, 5] = -127
    a[:, 6, 6], b[:, 6, 6] = NODATA, NODATA
    a[0, 6, 6] = b[0, 6, 6] = 127
    got = unit_dot_int8(a[:, ::-1], b[:, ::-1])
    x, y = exact(a[:, ::-1]), exact(b[:, ::-1])
    with np.errstate(invalid="ignore"):
        want = (x * y).sum(0) / np.sqrt((x * x).sum(0) * (y * y).sum(0))
    want[(a[:, ::-1] == NODATA).all(0) | (b[:, ::-1] == NODATA).all(0)] = np.nan
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0, equal_nan=True)
    assert got[-4, 3] == 1.0 and np.isnan(got[-3, 2]) and np.isfinite(got[-5, 4])
    assert got[-6, 5] < -0.99 and got[-7, 6] == 1.0
