"""Sentinel-2 context composites and the ``s2-difference`` method through the real earthengine-api client.

The stand-in serves a synthetic ``COPERNICUS/S2_SR_HARMONIZED`` collection (tests/ee_standin/s2.py) over the
mirror's bounds, and its Cloud Score+ collection. The known answers here are computed with numpy from the raw
observations of that collection: scene pre-filter, Cloud Score+ cs_cdf >= 0.6, per-pixel median of the clear
observations (an odd count everywhere). In 2023 every scene's QA60 is masked, as in Earth Engine.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ee
import numpy as np
import pytest
from shapely.geometry import box

from generator.errors import SourceError
from generator.grid import Grid, grid_for
from generator.sources.earthengine import S2_COLLECTION, S2_RGB_BANDS, EarthEngineSource
from generator.sources.ee_tiles import CONTEXT_BYTES_PER_PIXEL, CONTEXT_TILE_SIZE, MAX_REQUEST_BYTES
from generator.synthetic import MirrorSpec, build_mirror
from tests.ee_standin import StandinServer
from tests.ee_standin import s2 as synth
from tests.test_earthengine import TOKEN, assemble, ee_source

YEARS = (2018, 2020, 2023)
BOUNDS = (13.300, 52.500, 13.330, 52.520)
REGION = box(13.296, 52.498, 13.326, 52.518)  # reaches beyond the mirror (and the S2 scenes) west and south
TILE = 96  # the tile side ee_source uses


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ee_s2_mirror")
    build_mirror(root, MirrorSpec(bounds=BOUNDS, years=YEARS, tile_size=128, seed=3))
    return root


@pytest.fixture(scope="module")
def grid() -> Grid:
    return grid_for(REGION)


@pytest.fixture
def standin(mirror: Path):
    with StandinServer(mirror, token=TOKEN) as server:
        yield server


def assemble_context(src: EarthEngineSource, grid: Grid, year: int) -> np.ndarray:
    out = np.full((3, *grid.shape), 65535, dtype=np.uint16)  # 65535: never written (DNs stay far below)
    for w, values in src.context(grid, year, src.context_windows(grid)):
        assert values.shape == (3, w.height, w.width) and values.dtype == np.uint16
        out[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    assert not (out == 65535).any(), "some pixels of the grid were never yielded"
    return out


# --- known answers, from the raw observations ---------------------------------------------------------------


def rows_cols(spec: synth.S2Spec, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The S2 pixel under each grid pixel: both are 10 m grids of one UTM zone, offset by whole pixels."""
    assert grid.crs == spec.crs and grid.transform.a == spec.transform.a == 10
    dc = (grid.transform.c - spec.transform.c) / 10
    dr = (spec.transform.f - grid.transform.f) / 10
    assert dc == int(dc) and dr == int(dr)
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    rows, cols = rows + int(dr), cols + int(dc)
    inside = (rows >= 0) & (rows < spec.height) & (cols >= 0) & (cols < spec.width)
    return np.clip(rows, 0, spec.height - 1), np.clip(cols, 0, spec.width - 1), inside


def known_median(spec: synth.S2Spec, grid: Grid, year: int) -> np.ndarray:
    """(3, rows, cols) float64 median of the clear observations of B4, B3, B2; NaN where none."""
    rows, cols, inside = rows_cols(spec, grid)
    values, clear = [], []
    for k in range(synth.ACCEPTED + 1):
        if spec.properties(year, k)["CLOUDY_PIXEL_PERCENTAGE"] >= 20:
            continue
        obs = spec.observation(year, k, rows, cols)
        values.append(np.stack([obs[b] for b in ("B4", "B3", "B2")]).astype(np.float64))
        clear.append((spec.cs_cdf(year, k, rows, cols) >= 0.6) & inside)
    stack = np.where(np.array(clear)[:, None], np.array(values), np.nan)
    count = np.array(clear).sum(axis=0)
    assert np.all((count % 2 == 1) | (count == 0)), "the synthetic data must have odd clear counts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no clear observation
        return np.nanmedian(stack, axis=0)


def zone(spec: synth.S2Spec, grid: Grid, z: tuple) -> np.ndarray:
    rows, cols, inside = rows_cols(spec, grid)
    return spec.zone(z, rows, cols) & inside


# --- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("year", [2018, 2023])
def test_context_is_the_median_of_clear_observations(standin: StandinServer, grid: Grid, year: int) -> None:
    """Clear by Cloud Score+: 2023 (QA60 masked in every scene) has composites, and the cloud shadows QA60
    never flagged are left out."""
    assert all(standin.s2.qa60_masked(year, k) == (year == 2023) for k in range(synth.ACCEPTED + 1))
    src = ee_source(standin)
    got = assemble_context(src, grid, year)
    want = known_median(standin.s2, grid, year)
    nodata = np.isnan(want).any(axis=0)
    assert np.array_equal(got[:, ~nodata], want[:, ~nodata].astype(np.uint16))
    assert (got[:, nodata] == 0).all(), "no clear observation: 0 in every band"
    assert (got[:, ~nodata] > 0).all()
    spec = standin.s2
    rows, cols, inside = rows_cols(spec, grid)
    assert (~inside).any() and (got[:, ~inside] == 0).all(), "beyond the scenes: nodata"
    # Band order B4, B3, B2: where 4 of 5 scenes are clouded, the composite is the one clear scene.
    four = zone(spec, grid, synth.ZONE_FOUR)
    clear = spec.observation(year, 4, rows, cols)
    for i, band in enumerate(S2_RGB_BANDS):
        assert np.array_equal(got[i][four], clear[band][four])
    assert (got[:, zone(spec, grid, synth.ZONE_OTHER_BITS)] < synth.CLOUD_DN).all(), "no cloud slips through"
    assert (got[:, zone(spec, grid, synth.ZONE_SHADOW)] > 100).all(), "no shadow slips through"
    all_clouded = zone(spec, grid, synth.ZONE_ALL)
    assert (got[:, all_clouded] == 0).all() if year == YEARS[0] else (got[:, all_clouded] > 0).all()


def test_s2_difference_known_answer(standin: StandinServer, grid: Grid) -> None:
    src = ee_source(standin)
    got = assemble(src, grid, 2018, 2023, "s2-difference")
    a, b = known_median(standin.s2, grid, 2018), known_median(standin.s2, grid, 2023)
    want = np.sqrt((((b - a) / 10000) ** 2).sum(axis=0))
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN where either year has no clear observation"
    valid = ~np.isnan(want)
    assert float(np.max(np.abs(got[valid] - want[valid]))) <= 1e-4
    assert np.isnan(got[zone(standin.s2, grid, synth.ZONE_ALL)]).all(), "2018 is all clouds there"
    changed = zone(standin.s2, grid, synth.ZONE_CHANGE)
    planted = np.sqrt(sum((d / 10000) ** 2 for d in synth.CHANGE_DN.values()))
    assert np.allclose(np.median(got[changed]), planted, atol=0.01)
    assert np.nanmax(got[~changed]) < 0.02 < planted


def test_a_qa60_mask_empties_the_scenes_of_the_qa60_gap(standin: StandinServer, grid: Grid) -> None:
    """What the stand-in models (and the issue was): the old QA60 bit mask keeps no pixel of a 2023 scene,
    because Earth Engine serves QA60 masked there; in 2018 it keeps most pixels."""
    ee_source(standin)

    def qa60_clear(im: ee.Image) -> ee.Image:
        qa = im.select("QA60")
        return im.updateMask(qa.bitwiseAnd(1 << 10).eq(0).And(qa.bitwiseAnd(1 << 11).eq(0)))

    kept = {}
    for year in (2018, 2023):
        scenes = ee.ImageCollection(S2_COLLECTION).filterDate(f"{year}-01-01", f"{year + 1}-01-01")
        scenes = scenes.filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", 20))
        image = scenes.map(qa60_clear).select(["B4"]).median().unmask(0, False).toUint16()
        t = grid.transform
        arr = ee.data.computePixels(
            {
                "expression": image,
                "fileFormat": "NUMPY_NDARRAY",
                "grid": {
                    "crsCode": grid.crs,
                    "dimensions": {"width": grid.width, "height": grid.height},
                    "affineTransform": {
                        "scaleX": t.a,
                        "shearX": 0,
                        "translateX": t.c,
                        "shearY": 0,
                        "scaleY": t.e,
                        "translateY": t.f,
                    },
                },
            }
        )
        kept[year] = float((arr["B4"] > 0).mean())
    assert kept[2023] == 0.0 and kept[2018] > 0.5, kept


def test_standin_counts_a_mask_byte_per_band(standin: StandinServer) -> None:
    """A 2560² 3-band uint16 request is 2560² × 3 × (2 + 1) = 58982400 bytes: refused; the source's context
    tile (2048²) is accepted."""
    ee_source(standin)
    image = ee.Image.constant([1, 2, 3]).toUint16()

    def request(side: int) -> np.ndarray:
        grid = {
            "crsCode": "EPSG:32633",
            "dimensions": {"width": side, "height": side},
            "affineTransform": {
                "scaleX": 10,
                "shearX": 0,
                "translateX": 0,
                "shearY": 0,
                "scaleY": -10,
                "translateY": 0,
            },
        }
        return ee.data.computePixels({"expression": image, "fileFormat": "NUMPY_NDARRAY", "grid": grid})

    with pytest.raises(ee.EEException) as exc:
        request(2560)
    assert (
        str(exc.value) == "Total request size (58982400 bytes) must be less than or equal to 50331648 bytes."
    )
    arr = request(CONTEXT_TILE_SIZE)
    assert arr.shape == (CONTEXT_TILE_SIZE, CONTEXT_TILE_SIZE) and int(arr["constant_2"][0, 0]) == 3


def test_context_tiles_and_request_sizes(standin: StandinServer, grid: Grid) -> None:
    assert CONTEXT_TILE_SIZE == 2048
    assert CONTEXT_BYTES_PER_PIXEL == 3 * (2 + 1)
    assert CONTEXT_TILE_SIZE**2 * 9 <= MAX_REQUEST_BYTES < (CONTEXT_TILE_SIZE + 512) ** 2 * 9
    src = ee_source(standin, tile_size=3072)
    assert [(w.width, w.height) for w in src.context_windows(grid)] == [(grid.width, grid.height)]
    src = ee_source(standin)
    assemble_context(src, grid, 2020)
    entries = report(standin, f"context {grid.width}×{grid.height} px")
    assert len(entries) == src.stats.requests == len(src.context_windows(grid)) > 1
    assert all(e.width <= TILE and e.height <= TILE for e in entries)
    assert src.stats.bytes == sum(w * h * 3 * 2 for w, h in src.stats.request_sizes)


def test_context_tiles_split_on_total_request_size(mirror: Path, grid: Grid) -> None:
    with StandinServer(mirror, token=TOKEN, max_request_bytes=60 * 60 * 9) as server:
        src = ee_source(server)
        got = assemble_context(src, grid, 2023)
        entries = report(server, "context, size limit 32400 bytes")
        spec = server.s2
    want = known_median(spec, grid, 2023)
    assert np.array_equal(got, np.nan_to_num(want, nan=0).astype(np.uint16))
    assert f"Total request size ({TILE * TILE * 9} bytes)" in {e.message.split(" must")[0] for e in entries}
    assert src.stats.splits > 0
    assert all(e.width * e.height * 9 <= 60 * 60 * 9 for e in entries if e.status == 200)


def test_s2_difference_splits_on_user_memory_limit(mirror: Path, grid: Grid) -> None:
    with StandinServer(mirror, token=TOKEN, memory_limit_pixels=50 * 50) as server:
        src = ee_source(server)
        got = assemble(src, grid, 2020, 2023, "s2-difference")
        entries = report(server, "s2-difference, memory limit 2500 px")
        spec = server.s2
    a, b = known_median(spec, grid, 2020), known_median(spec, grid, 2023)
    want = np.sqrt((((b - a) / 10000) ** 2).sum(axis=0))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.nanmax(np.abs(got - want)) <= 1e-4
    assert src.stats.splits == len([e for e in entries if e.status == 400]) > 0


def test_context_retries_through_429_500_and_dropped_connections(standin: StandinServer, grid: Grid) -> None:
    src = ee_source(standin)
    for kind, count in (("429", 3), ("500", 2), ("drop", 1)):
        standin.inject(kind, count)
    got = assemble_context(src, grid, 2020)
    assert np.array_equal(got, np.nan_to_num(known_median(standin.s2, grid, 2020), nan=0).astype(np.uint16))
    entries = report(standin, "context under 3×429, 2×500, 1 drop")
    assert sorted(e.fault for e in entries if e.fault) == ["429", "429", "429", "500", "500", "drop"]
    assert src.stats.retries >= 1


def test_without_the_scene_prefilter_the_standin_refuses_even_medians(standin: StandinServer, grid) -> None:
    """Keeping the hazy scene makes clear counts even; the stand-in answers 400 instead of guessing how
    Earth Engine breaks an even median. It also shows the client sends the CLOUDY_PIXEL_PERCENTAGE filter."""
    src = ee_source(standin, s2_max_cloudy_percent=None, retry_attempts=0)
    with pytest.raises(SourceError, match="median of an even number"):
        assemble_context(src, grid, 2020)


def test_unimplemented_algorithms_are_http_400(standin: StandinServer, grid: Grid) -> None:
    ee_source(standin)
    coll = ee.ImageCollection(S2_COLLECTION).filterDate("2020-01-01", "2021-01-01")
    with pytest.raises(ee.EEException, match=r"'ImageCollection\.reduce' is not implemented"):
        coll.reduce(ee.Reducer.median()).reduce(ee.Reducer.sum()).getInfo()
    with pytest.raises(ee.EEException, match=r"'Image\.focalMax' is not implemented"):
        coll.map(lambda im: im.focalMax(3)).size().getInfo()
    with pytest.raises(ee.EEException, match="only mosaics of the embedding mirror"):
        coll.mosaic().reduce(ee.Reducer.sum()).getInfo()
    assert {e.status for e in standin.log if e.endpoint == "value:compute"} == {400}


def test_map_and_filters_through_get_info(standin: StandinServer) -> None:
    """Collection.map functions (functionDefinitionValue / argumentReference) and Filter.lt, via getInfo."""
    ee_source(standin)
    coll = ee.ImageCollection(S2_COLLECTION).filterDate("2020-01-01", "2021-01-01")
    assert coll.size().getInfo() == synth.ACCEPTED + 1
    kept = coll.filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", 20))
    assert kept.size().getInfo() == synth.ACCEPTED
    mapped = kept.map(lambda im: im.select(["B4"]).updateMask(im.select("QA60").eq(0)))
    starts = mapped.aggregate_array("system:time_start").getInfo()
    assert starts == [standin.s2.properties(2020, k)["system:time_start"] for k in range(synth.ACCEPTED)]


def report(server: StandinServer, label: str) -> list:
    entries = server.entries()
    sizes = sorted({(e.width, e.height) for e in entries if e.status == 200})
    print(
        f"\n{label}: {len(entries)} computePixels requests, statuses {sorted({e.status for e in entries})}, "
        f"{sum(e.response_bytes for e in entries)} bytes down, tile sizes {sizes}"
    )
    failures = [e.message for e in server.log if e.message.startswith("stand-in failure")]
    assert not failures, failures[0]
    return entries


@pytest.mark.parametrize(
    "where, year",
    [("beyond the scenes", 2020), ("a year without scenes", 2019)],
)
def test_no_scenes_give_nodata_not_an_error(standin: StandinServer, where: str, year: int) -> None:
    """A fully masked placeholder is merged into each year's scenes, so the median always has its bands."""
    grid = grid_for(box(14.000, 52.000, 14.004, 52.003) if where == "beyond the scenes" else REGION)
    src = ee_source(standin)
    assert not assemble_context(src, grid, year).any()
    assert np.isnan(assemble(src, grid, year, 2023, "s2-difference")).all()
