"""Embedding pictures (issue 11, point 4): each change item of an embedding method gets an RGB picture of
each year's embedding (A01, A16, A09 stretched over −0.3…0.3), made from the data the job reads anyway.

Expected pixels are computed here from the mirror's files with rasterio, independently of the code under
test: the file pixel holding the picture pixel's centre, de-quantized and renormalized, then stretched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import Point, box, mapping

from catalog.validate import validate_catalog
from changecat.pipeline import SilentReporter, run
from generator.config import load_config
from generator.grid import Grid, grid_for, to_crs
from generator.preview import PreviewCollector, centre_index, preview_plan, sample_unit
from generator.quicklook import THUMBNAIL_SIDE
from generator.sources.aef import AefSource
from generator.synthetic import Hole, MirrorSpec, Plant, build_mirror
from tests.ee_standin import StandinServer
from tests.range_server import serve

COLLECTION = "google-satellite-embedding-v1-annual"
YEARS = (2018, 2020)
HOLE = box(12.06, 52.42, 12.07, 52.427)  # nodata in 2018 only
SPEC = MirrorSpec(
    bounds=(12.02, 52.40, 12.16, 52.47),  # UTM 33N only
    years=YEARS,
    tile_size=512,
    plants=(Plant(box(12.05, 52.41, 12.06, 52.42), year=2020, change=0.5),),
    holes=(Hole(HOLE, year=2018),),
    seed=11,
    block_size=256,
    noise=20,
)
REGION = box(12.03, 52.405, 12.13, 52.45)  # about 680 × 500 px: the picture samples it ~2.7×
HTTP_REGION = box(12.03, 52.405, 12.075, 52.43)  # about 320 × 290 px, two files of a year: a quick read
SAMPLES = 300
BYTES_JITTER = 0.01
"""Run-to-run variation of the bytes an HTTP read fetches (measured ≤ 0.2%, parallel reads)."""
RED, GREEN, BLUE = 1, 16, 9  # A01, A16, A09 of A00…A63


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embctx-mirror")
    build_mirror(root, SPEC)
    return root


def write_config(folder: Path, source: dict[str, Any], methods: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "catalog": {"id": "embctx", "output": str(folder / "catalog")},
        "source": source,
        "pairs": [list(YEARS)],
        "methods": methods,
        "regions": [{"id": "area", "geometry": json.loads(json.dumps(mapping(REGION)))}],
    }
    path = folder / "regions.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def aef_catalog(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    folder = tmp_path_factory.mktemp("embctx-aef")
    outcomes = run(load_config(write_config(folder, {"kind": "aef", "root": str(mirror)}, ["cosine"])))
    assert [o.status for o in outcomes] == ["done"], [o.error for o in outcomes]
    return folder / "catalog"


class Recorder(SilentReporter):
    def __init__(self) -> None:
        self.estimates: list[tuple[int, int]] = []

    def run_estimate(self, requests: int, pixels: int) -> None:
        self.estimates.append((requests, pixels))


EE_FACTS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def ee_catalog(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """Cosine and angle on Earth Engine (the stand-in over the same mirror)."""
    folder = tmp_path_factory.mktemp("embctx-ee")
    with StandinServer(mirror) as standin:
        source = {"kind": "earthengine", "project": "test-project", "url": standin.url}
        reporter = Recorder()
        before = len(standin.log)
        outcomes = run(load_config(write_config(folder, source, ["cosine", "angle"])), reporter)
        assert [o.status for o in outcomes] == ["done"] * 2, [o.error for o in outcomes]
        EE_FACTS["requests"] = [e for e in standin.log[before:] if e.endpoint.endswith("computePixels")]
        EE_FACTS["estimates"] = reporter.estimates
    return folder / "catalog"


# --- what the test expects, from the mirror's files -------------------------------------------------------


def year_files(mirror: Path, year: int) -> list[tuple[Affine, np.ndarray]]:
    """(transform, int8 data) of every file of a year (small files: read whole)."""
    out = []
    for path in sorted((mirror / str(year)).glob("*/*.tiff")):
        with rasterio.open(path) as f:
            out.append((f.transform, f.read()))
    return out


def expected_pixel(files: list[tuple[Affine, np.ndarray]], x: float, y: float) -> np.ndarray | None:
    """RGB bytes of the embedding at (x, y) (grid CRS), None where no file has data there."""
    for transform, data in files:
        col, row = (int(np.floor(v)) for v in ~transform @ (x, y))
        if 0 <= row < data.shape[1] and 0 <= col < data.shape[2]:
            raw = data[:, row, col]
            if (raw == -128).all():
                return None
            v = raw.astype(np.float32)
            x_ = (v / np.float32(127.5)) ** 2 * np.sign(v)
            unit = x_ / np.sqrt(np.sum(x_ * x_))
            rgb = unit[[RED, GREEN, BLUE]].astype(np.float64)
            return np.clip(np.rint((rgb + 0.3) / 0.6 * 255.0), 0, 255).astype(np.uint8)
    return None


def item_of(catalog: Path, method: str) -> dict:
    return json.loads(next((catalog / COLLECTION).glob(f"*_{method}/*.json")).read_text())


def item_grid(item: dict) -> Grid:
    change = item["assets"]["change"]
    rows, cols = change["proj:shape"]
    return Grid(change["proj:code"], Affine(*change["proj:transform"][:6]), cols, rows)


def picture(catalog: Path, item: dict, key: str) -> np.ndarray:
    folder = catalog / COLLECTION / item["id"]
    with Image.open(folder / item["assets"][key]["href"]) as im:
        assert im.mode == "RGBA"
        return np.asarray(im)


def check_pixels(mirror: Path, catalog: Path, item: dict, seed: int) -> int:
    """Compare sampled picture pixels with the mirror; returns how many were opaque and checked."""
    grid = item_grid(item)
    region = to_crs(REGION, "EPSG:4326", grid.crs)
    checked = 0
    for year in YEARS:
        rgba = picture(catalog, item, f"embedding_{year}")
        rows, cols = rgba.shape[:2]
        files = year_files(mirror, year)
        sx, sy = grid.width / cols, grid.height / rows
        rng = np.random.default_rng(seed + year)
        for i, j in zip(rng.integers(0, rows, SAMPLES), rng.integers(0, cols, SAMPLES), strict=True):
            gc, gr = (j + 0.5) * sx, (i + 0.5) * sy  # the picture pixel's centre in grid pixels
            if min(abs(gc - round(gc)), abs(gr - round(gr))) < 1e-6:
                continue  # exactly on a pixel edge: either neighbour would be nearest
            x, y = grid.transform @ (gc, gr)
            want = expected_pixel(files, x, y)
            # The change COG keeps pixels whose centre is in the region: so does the picture.
            centre = grid.transform @ (np.floor(gc) + 0.5, np.floor(gr) + 0.5)
            inside = region.contains(Point(*centre))
            if want is None or not inside:
                assert rgba[i, j, 3] == 0, f"{year} ({i}, {j}): expected transparent"
                continue
            assert rgba[i, j, 3] == 255, f"{year} ({i}, {j}): expected opaque"
            np.testing.assert_array_equal(rgba[i, j, :3], want, err_msg=f"{year} pixel ({i}, {j})")
            checked += 1
    return checked


# --- tests ----------------------------------------------------------------------------------------------


def test_centre_sampling_is_exact() -> None:
    # 10 grid pixels into 4: centres at 1.25, 3.75, 6.25, 8.75 → pixels 1, 3, 6, 8.
    assert centre_index(4, 10).tolist() == [1, 3, 6, 8]
    assert centre_index(5, 5).tolist() == [0, 1, 2, 3, 4]  # not decimated: every pixel


def test_a_unit_gives_back_only_the_picture_pixels_it_holds() -> None:
    grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 0), 1000, 600)
    plan = preview_plan(grid)
    assert (plan.rows, plan.cols) == (154, THUMBNAIL_SIDE)
    rng = np.random.default_rng(1)
    cell = Window(512, 0, 488, 512)
    stacks = [rng.integers(-127, 128, size=(64, 512, 488), dtype=np.int8) for _ in YEARS]
    samples = sample_unit(plan, cell, stacks)
    assert samples is not None
    assert samples.values.shape == (2, 3, len(samples.rows), len(samples.cols))
    assert samples.values.nbytes < 2 * 3 * plan.rows * plan.cols * 4  # picture-sized at most
    ri, ci = plan.row_index(), plan.col_index()
    assert set(ci[samples.cols]) == {c for c in ci if 512 <= c < 1000}
    assert set(ri[samples.rows]) == {r for r in ri if r < 512}
    collector = PreviewCollector(plan, YEARS)
    collector.add(samples, YEARS)
    assert collector.missing() == []
    filled = np.isfinite(collector.values[YEARS[1]][0])
    assert (
        filled[np.ix_(samples.rows, samples.cols)].all()
        and filled.sum() == samples.rows.size * samples.cols.size
    )
    gap = min(set(range(grid.height)) - set(ri.tolist()))  # a grid row no picture row samples
    thin = [s[:, :1] for s in stacks]
    assert sample_unit(plan, Window(0, gap, 488, 1), thin) is None


def test_aef_items_have_a_picture_of_each_year(aef_catalog: Path, stac_schemas: Path) -> None:
    item = item_of(aef_catalog, "cosine")
    with Image.open(aef_catalog / COLLECTION / item["id"] / item["assets"]["thumbnail"]["href"]) as thumb:
        size = thumb.size
    for year in YEARS:
        asset = item["assets"][f"embedding_{year}"]
        assert asset["roles"] == ["overview"]
        assert asset["type"] == "image/png"
        assert asset["href"] == f"./embedding_{year}.png"
        assert picture(aef_catalog, item, f"embedding_{year}").shape[1::-1] == size
    assert validate_catalog(aef_catalog, stac_schemas) == []


def test_aef_pictures_are_the_stretched_embedding(aef_catalog: Path, mirror: Path) -> None:
    assert check_pixels(mirror, aef_catalog, item_of(aef_catalog, "cosine"), seed=1) > SAMPLES


def test_the_nodata_hole_is_transparent_in_its_year_only(aef_catalog: Path) -> None:
    item = item_of(aef_catalog, "cosine")
    grid = item_grid(item)
    hx, hy = to_crs(HOLE, "EPSG:4326", grid.crs).centroid.coords[0]
    col, row = ~grid.transform @ (hx, hy)
    before, after = (picture(aef_catalog, item, f"embedding_{y}") for y in YEARS)
    i, j = int(row * before.shape[0] / grid.height), int(col * before.shape[1] / grid.width)
    assert before[i, j, 3] == 0 and after[i, j, 3] == 255
    assert before[0, 0, 3] == 0, "outside the region (a corner of the bounding grid) is transparent"


def test_a_missing_picture_makes_the_product_stale(aef_catalog: Path, tmp_path: Path, mirror: Path) -> None:
    config = load_config(write_config(tmp_path, {"kind": "aef", "root": str(mirror)}, ["cosine"]))
    assert [o.status for o in run(config)] == ["done"]
    assert [o.status for o in run(config)] == ["skipped"]
    item = item_of(tmp_path / "catalog", "cosine")
    (tmp_path / "catalog" / COLLECTION / item["id"] / f"embedding_{YEARS[0]}.png").unlink()
    assert [o.status for o in run(config)] == ["done"]
    assert (tmp_path / "catalog" / COLLECTION / item["id"] / f"embedding_{YEARS[0]}.png").is_file()


def collect(src: AefSource, grid: Grid) -> tuple[PreviewCollector, np.ndarray]:
    collector = PreviewCollector(preview_plan(grid), YEARS)
    change = np.full(grid.shape, np.nan, dtype=np.float32)
    for w, values in src.compute(grid, *YEARS, "cosine", src.windows(grid), preview=collector):
        change[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    return collector, change


def test_over_http_the_pictures_cost_no_extra_bytes(mirror: Path) -> None:
    local = AefSource(str(mirror))
    grid = grid_for(HTTP_REGION, local.grid_origin("EPSG:32633"))
    try:
        expected, _ = collect(local, grid)
    finally:
        local.close()
    served = {}
    for with_preview in (False, True):
        with serve(mirror) as (url, counters):  # a new server (and URL): nothing cached from the other run
            src = AefSource(url)
            try:
                if with_preview:
                    got, _ = collect(src, grid)
                else:
                    for _ in src.compute(grid, *YEARS, "cosine", src.windows(grid)):
                        pass
            finally:
                src.close()
            served[with_preview] = counters.bytes_sent
    # The same blocks are fetched; the threads' read order moves GDAL's range merging by ~0.2% from run
    # to run. A second pass over the stacks, even over 3 of 64 band-interleaved bands, would add ≥ 4.7%.
    assert served[True] <= served[False] * (1 + BYTES_JITTER), served
    for year in YEARS:
        np.testing.assert_array_equal(got.values[year], expected.values[year])
    assert np.isfinite(expected.values[YEARS[1]]).mean() > 0.5


def test_earth_engine_pictures_cost_one_request_per_year(ee_catalog: Path, stac_schemas: Path) -> None:
    item = item_of(ee_catalog, "cosine")
    rows, cols = picture(ee_catalog, item, f"embedding_{YEARS[0]}").shape[:2]
    small = [e for e in EE_FACTS["requests"] if (e.width, e.height) == (cols, rows)]
    # One per year for the region: the angle job reuses the cosine job's pictures.
    assert len(small) == len(YEARS) and all(e.status == 200 for e in small)
    made = EE_FACTS["requests"]
    assert EE_FACTS["estimates"] == [(len(made), sum(e.width * e.height for e in made))]
    for method in ("cosine", "angle"):
        assert {f"embedding_{y}" for y in YEARS} <= item_of(ee_catalog, method)["assets"].keys()
    assert validate_catalog(ee_catalog, stac_schemas) == []


def test_earth_engine_pictures_are_the_stretched_embedding(ee_catalog: Path, mirror: Path) -> None:
    assert check_pixels(mirror, ee_catalog, item_of(ee_catalog, "angle"), seed=2) > SAMPLES
