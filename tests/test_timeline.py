"""Year of largest change (config ``timeline: true``): the per-pixel fold, and the product made by a real run
over a synthetic AEF mirror with changes planted in known years, catalogued, validated and skipped when up
to date."""

from __future__ import annotations

import itertools
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import box

from catalog.files import read_json
from catalog.integrity import leftovers
from catalog.summary import summarize
from catalog.timeline import CLASSIFICATION_EXTENSION
from catalog.validate import validate_catalog
from changecat.pipeline import SilentReporter, prune, run
from generator.config import load_config, parse_config
from generator.errors import ConfigError
from generator.grid import Grid, to_crs
from generator.quicklook import LEGEND_SWATCH, WEAK_COLOR, category_palette
from generator.synthetic import Hole, MirrorSpec, Plant, build_mirror, planted_value
from generator.timeline import YEAR_NODATA, chunks, fold, largest_change
from tests.faults_helpers import signal_and_wait, start_held

COLLECTION = "google-satellite-embedding-v1-annual-timeline"
CHANGE_COLLECTION = "google-satellite-embedding-v1-annual"
QUANTIZATION_TOLERANCE = 0.01
"""int8 quantization moves a planted change value by a few thousandths."""

BUILT_2019 = box(13.305, 52.505, 13.315, 52.512)  # planted in 2019
CLEARED_2021 = box(13.325, 52.505, 13.335, 52.512)  # planted in 2021
GAP_2021 = box(13.305, 52.518, 13.315, 52.525)  # planted in 2021, nodata in 2019: pairs 18-19, 19-20 missing
EMPTY = box(13.325, 52.518, 13.335, 52.525)  # nodata in 2019 and 2020: every consecutive pair is missing
STABLE = box(13.343, 52.505, 13.355, 52.525)
SPEC = MirrorSpec(
    bounds=(13.30, 52.50, 13.36, 52.53),
    years=(2018, 2019, 2020, 2021),
    tile_size=256,
    plants=(
        Plant(BUILT_2019, year=2019, change=0.5),
        Plant(CLEARED_2021, year=2021, change=0.4),
        Plant(GAP_2021, year=2021, change=0.6),
    ),
    holes=(Hole(GAP_2021, year=2019), Hole(EMPTY, year=2019), Hole(EMPTY, year=2020)),
    texture=True,
    seed=11,
)
PLANTED = {
    "built": (BUILT_2019, 2019, 0.5),
    "cleared": (CLEARED_2021, 2021, 0.4),
    "gap": (GAP_2021, 2021, 0.6),
}


# --- the per-pixel fold ------------------------------------------------------------------------------------


def test_fold_keeps_the_largest_change_the_earliest_on_ties_and_skips_nodata() -> None:
    year = np.zeros((1, 5), dtype="uint16")
    magnitude = np.full((1, 5), np.nan, dtype="float32")
    fold(year, magnitude, 2019, np.array([[0.1, 0.3, np.nan, 0.2, np.nan]], dtype="float32"))
    fold(year, magnitude, 2020, np.array([[0.5, 0.3, 0.4, np.nan, np.nan]], dtype="float32"))
    fold(year, magnitude, 2021, np.array([[0.2, 0.1, np.nan, 0.1, np.nan]], dtype="float32"))
    assert year.tolist() == [[2020, 2019, 2020, 2019, YEAR_NODATA]]  # 0.3 = 0.3: the earlier pair
    np.testing.assert_array_equal(magnitude, np.array([[0.5, 0.3, 0.4, 0.2, np.nan]], dtype="float32"))


GRID = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), 70, 50)


def _series(seed: int, years: int = 5) -> np.ndarray:
    """Random changes per pair with NaNs and exact ties, (pairs, rows, cols)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 6, size=(years - 1, GRID.height, GRID.width)).astype("float32") / 10
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:, :5, :5] = np.nan  # every pair nodata
    return values


def _split_blocks(values: np.ndarray, seed: int, asked: list[int]):
    """A source that yields each asked window cut in two, in shuffled order (as a concurrent source might);
    ``asked`` records the pixels of each call."""

    def compute(grid: Grid, a: int, b: int, method: str, windows: list[Window]):
        asked.append(sum(int(w.width) * int(w.height) for w in windows))
        parts = []
        for w in windows:
            half = max(1, int(w.height) // 2)
            for r0, h in ((0, half), (half, int(w.height) - half)):
                if h:
                    parts.append(Window(w.col_off, w.row_off + r0, w.width, h))
        random.Random(seed + a).shuffle(parts)
        for w in parts:
            rows = slice(int(w.row_off), int(w.row_off + w.height))
            cols = slice(int(w.col_off), int(w.col_off + w.width))
            yield w, values[a - 2000, rows, cols]

    return compute


@pytest.mark.parametrize(("size", "chunk_pixels"), [(16, 300), (16, 10**6), (25, 1), (64, 5000)])
def test_streamed_result_equals_the_whole_array_argmax(size: int, chunk_pixels: int) -> None:
    values = _series(size)
    years = (2000, 2001, 2002, 2003, 2004)
    windows = list(GRID.windows(size))
    out_year = np.full(GRID.shape, 99, dtype="uint16")
    out_mag = np.full(GRID.shape, -1, dtype="float32")
    asked: list[int] = []
    for w, year, mag in largest_change(
        _split_blocks(values, size, asked), GRID, years, "cosine", windows, max_pixels=chunk_pixels
    ):
        rows = slice(int(w.row_off), int(w.row_off + w.height))
        cols = slice(int(w.col_off), int(w.col_off + w.width))
        out_year[rows, cols], out_mag[rows, cols] = year, mag
    # The reference over the whole array: nanargmax returns the first maximum, the earliest pair.
    valid = ~np.all(np.isnan(values), axis=0)
    filled = np.where(np.isnan(values), -np.inf, values)
    expected_year = np.where(valid, np.argmax(filled, axis=0) + 2001, 0)
    expected_mag = np.where(valid, np.max(filled, axis=0), np.nan)
    np.testing.assert_array_equal(out_year, expected_year)
    np.testing.assert_array_equal(out_mag, expected_mag.astype("float32"))
    assert (out_year[:5, :5] == YEAR_NODATA).all() and np.isnan(out_mag[:5, :5]).all()
    # Memory: each call covers one chunk (≤ the bound, or a single larger window), once per pair.
    assert max(asked) <= max(chunk_pixels, size * size)
    assert len(asked) == len(list(chunks(windows, chunk_pixels))) * (len(years) - 1)


def test_chunks_bound_the_pixels_held_at_once() -> None:
    windows = list(GRID.windows(16))
    groups = list(chunks(windows, 600))
    assert [w for g in groups for w in g] == windows
    assert all(sum(int(w.width) * int(w.height) for w in g) <= 600 for g in groups)
    assert [len(g) for g in chunks(windows, 1)] == [1] * len(windows)  # a window larger than the bound


# --- a real run over a mirror -------------------------------------------------------------------------------


def _config_data(mirror: Path, catalog: Path, **extra: object) -> dict:
    data = {
        "catalog": {"id": "timeline-test", "title": "Timeline test", "output": str(catalog)},
        "source": {"kind": "aef", "root": str(mirror)},
        "pairs": "consecutive",
        "methods": ["cosine", "angle"],
        "timeline": True,
        "regions": [{"id": "town", "title": "Town", "bbox": list(SPEC.bounds)}],
    }
    data.update(extra)
    return data


def _write_config(folder: Path, data: dict) -> Path:
    path = folder / "regions.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("timeline-mirror")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(scope="module")
def made(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    """A run with timeline: true, consecutive pairs, both embedding methods: (catalog, config, outcomes)."""
    out = tmp_path_factory.mktemp("timeline-run")
    config = _write_config(out, _config_data(mirror, out / "catalog"))
    outcomes = run(load_config(config))
    return out / "catalog", config, outcomes


def _item(catalog: Path, method: str) -> tuple[Path, dict]:
    item_id = f"town_2018_2021_{method}_timeline"
    folder = catalog / COLLECTION / item_id
    return folder, read_json(folder / f"{item_id}.json")


def _sample(path: Path, geometry) -> np.ndarray:
    """The raster's values at the pixels whose centres lie in ``geometry`` (WGS84), shrunk by 30 m."""
    with rasterio.open(path) as ds:
        inner = to_crs(geometry, "EPSG:4326", ds.crs.to_string()).buffer(-30)
        window = rasterio.windows.from_bounds(*inner.bounds, transform=ds.transform).round_offsets()
        return ds.read(1, window=window.round_lengths()).ravel()


def test_the_run_makes_a_timeline_per_embedding_method(made) -> None:
    catalog, _, outcomes = made
    done = {o.job.item_id for o in outcomes if o.status == "done"}
    assert all(o.status == "done" for o in outcomes), [(o.job.item_id, o.error) for o in outcomes]
    assert {"town_2018_2021_cosine_timeline", "town_2018_2021_angle_timeline"} <= done
    assert len(done) == 3 * 2 + 2  # the change items of the three consecutive pairs, and the timelines
    root = read_json(catalog / "catalog.json")
    children = {link["href"] for link in root["links"] if link["rel"] == "child"}
    assert f"./{COLLECTION}/collection.json" in children


@pytest.mark.parametrize("method", ["cosine", "angle"])
def test_planted_changes_get_their_year_and_size(made, method: str) -> None:
    catalog, _, _ = made
    folder, _ = _item(catalog, method)
    for name, (area, year, change) in PLANTED.items():
        years = _sample(folder / "year.tif", area)
        magnitudes = _sample(folder / "magnitude.tif", area)
        assert years.size > 100, name
        assert (years == year).all(), (name, np.unique(years))
        np.testing.assert_allclose(magnitudes, planted_value(change, method), atol=QUANTIZATION_TOLERANCE)
    stable = _sample(folder / "magnitude.tif", STABLE)
    assert stable.size > 1000 and np.nanmax(stable) < QUANTIZATION_TOLERANCE
    with rasterio.open(folder / "year.tif") as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == YEAR_NODATA
        assert ds.tags().get("OVERVIEW_RESAMPLING") == "MODE"
    with rasterio.open(folder / "magnitude.tif") as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)


def test_a_pixel_without_any_pair_is_nodata(made) -> None:
    folder, _ = _item(made[0], "cosine")
    assert (_sample(folder / "year.tif", EMPTY) == YEAR_NODATA).all()
    assert np.isnan(_sample(folder / "magnitude.tif", EMPTY)).all()


def test_the_item_declares_raster_and_classification_and_validates(made, stac_schemas: Path) -> None:
    catalog, _, _ = made
    folder, item = _item(catalog, "cosine")
    assert CLASSIFICATION_EXTENSION in item["stac_extensions"]
    p = item["properties"]
    assert (p["change:from_year"], p["change:to_year"], p["change:years"]) == (
        2018,
        2021,
        [2018, 2019, 2020, 2021],
    )
    year = item["assets"]["year"]
    assert (year["data_type"], year["nodata"], year["href"]) == ("uint16", 0, "./year.tif")
    classes = {c["value"]: c for c in year["classification:classes"]}
    assert set(classes) == {2019, 2020, 2021, 0} and classes[0]["nodata"] is True
    palette = category_palette([2019, 2020, 2021])
    assert all(classes[y]["color_hint"] == "".join(f"{c:02X}" for c in palette[y]) for y in palette)
    with rasterio.open(folder / "year.tif") as ds:
        data = ds.read(1)
    for y in palette:
        assert classes[y]["count"] == int((data == y).sum())
    assert classes[2021]["count"] > 0 and classes[2019]["count"] > 0
    magnitude = item["assets"]["magnitude"]
    assert (magnitude["data_type"], magnitude["nodata"], magnitude["unit"]) == ("float32", "nan", "1")
    assert magnitude["statistics"]["maximum"] == pytest.approx(0.6, abs=QUANTIZATION_TOLERANCE)
    assert validate_catalog(catalog, stac_schemas) == []
    collection = read_json(catalog / COLLECTION / "collection.json")
    assert CLASSIFICATION_EXTENSION in collection["stac_extensions"]
    assert set(collection["item_assets"]) == {"year", "magnitude", "thumbnail", "overview", "legend"}


def test_the_summary_shows_the_largest_change(made) -> None:
    rows = {r["item_id"]: r for r in summarize(made[0])}
    _, item = _item(made[0], "angle")
    mean = item["assets"]["magnitude"]["statistics"]["mean"]
    assert rows["town_2018_2021_angle_timeline"]["mean"] == pytest.approx(mean) and mean > 0


def test_validate_without_a_local_classification_schema_says_so(made, tmp_path: Path) -> None:
    """The shared offline copies lack classification: without the vendored copy validate names it missing."""
    import catalog.extension as extension

    saved = dict(extension.VENDORED_EXTENSIONS)
    extension.VENDORED_EXTENSIONS.clear()
    try:
        problems = validate_catalog(made[0], Path(__file__).resolve().parents[2] / "shared" / "stac-schemas")
    finally:
        extension.VENDORED_EXTENSIONS.update(saved)
    assert problems and all("classification/v2.0.0" in p for p in problems)


def test_the_quicklook_uses_the_legend_colours(made) -> None:
    catalog, _, _ = made
    folder, item = _item(catalog, "cosine")
    palette = category_palette([2019, 2020, 2021])
    legend = np.asarray(Image.open(folder / "legend.png").convert("RGB"))
    row = LEGEND_SWATCH + 4
    centre = 4 + LEGEND_SWATCH // 2
    swatches = [
        tuple(int(c) for c in legend[centre + i * row, centre]) for i in range(legend.shape[0] // row)
    ]
    assert swatches == [palette[2019], palette[2020], palette[2021], WEAK_COLOR]
    for name in ("thumbnail.png", "overview.png"):
        image = np.asarray(Image.open(folder / name).convert("RGBA"))
        opaque = {tuple(int(c) for c in px[:3]) for px in image.reshape(-1, 4) if px[3]}
        assert opaque == {palette[2019], palette[2021], WEAK_COLOR}, name  # no 2020 change was planted
    assert {"thumbnail", "overview", "legend"} <= set(item["assets"])


def test_the_quicklook_shows_each_area_in_its_colour(made) -> None:
    """Planted areas in their year's colour, the stable area grey (its year means nothing), no pixel at
    all where no pair has data."""
    folder, _ = _item(made[0], "cosine")
    palette = category_palette([2019, 2020, 2021])
    image = np.asarray(Image.open(folder / "overview.png").convert("RGBA"))
    with rasterio.open(folder / "year.tif") as ds:
        assert image.shape[:2] == (ds.height, ds.width)  # small enough to be drawn at full resolution
        transform, crs = ds.transform, ds.crs.to_string()

    def pixels(area) -> np.ndarray:
        inner = to_crs(area, "EPSG:4326", crs).buffer(-30)
        window = (
            rasterio.windows.from_bounds(*inner.bounds, transform=transform).round_offsets().round_lengths()
        )
        return image[window.toslices()].reshape(-1, 4)

    for area, colour in ((BUILT_2019, palette[2019]), (CLEARED_2021, palette[2021]), (STABLE, WEAK_COLOR)):
        assert (pixels(area) == (*colour, 255)).all()
    assert (pixels(EMPTY)[:, 3] == 0).all()


def test_a_rerun_skips_the_timelines_and_a_damaged_one_is_remade(made) -> None:
    catalog, config, _ = made
    outcomes = run(load_config(config))
    assert {o.status for o in outcomes} == {"skipped"}
    folder, _ = _item(catalog, "angle")
    (folder / "legend.png").write_bytes(b"not the legend")
    outcomes = {o.job.item_id: o.status for o in run(load_config(config))}
    assert outcomes.pop("town_2018_2021_angle_timeline") == "done"
    assert set(outcomes.values()) == {"skipped"}


def test_prune_keeps_wanted_timelines_and_removes_unwanted_ones(mirror: Path, tmp_path: Path) -> None:
    data = _config_data(mirror, tmp_path / "catalog", methods=["cosine"], pairs=[[2020, 2021]])
    config = _write_config(tmp_path, data)
    assert {o.status for o in run(load_config(config))} == {"done"}
    assert prune(load_config(config), dry_run=True) == []
    data["timeline"] = False
    _write_config(tmp_path, data)
    removed = prune(load_config(config))
    assert [p.name for p in removed] == ["town_2020_2021_cosine_timeline"]
    assert not (tmp_path / "catalog" / COLLECTION / "collection.json").exists()
    root = read_json(tmp_path / "catalog" / "catalog.json")
    assert [link["href"] for link in root["links"] if link["rel"] == "child"] == [
        f"./{CHANGE_COLLECTION}/collection.json"
    ]
    assert (tmp_path / "catalog" / CHANGE_COLLECTION / "town_2020_2021_cosine").is_dir()


def test_explicit_pairs_give_the_years_they_list(mirror: Path, tmp_path: Path) -> None:
    data = _config_data(mirror, tmp_path / "catalog", methods=["cosine"], pairs=[[2018, 2020], [2020, 2021]])
    outcomes = run(load_config(_write_config(tmp_path, data)))
    timeline = [o for o in outcomes if o.job.item_id.endswith("_timeline")]
    assert [(o.job.item_id, o.status) for o in timeline] == [("town_2018_2021_cosine_timeline", "done")]
    folder = tmp_path / "catalog" / COLLECTION / "town_2018_2021_cosine_timeline"
    item = read_json(folder / "town_2018_2021_cosine_timeline.json")
    assert item["properties"]["change:years"] == [2018, 2020, 2021]
    # 2019's construction lies in the pair 2018→2020; the gap area (nodata 2019) is not missing any more.
    assert (_sample(folder / "year.tif", BUILT_2019) == 2020).all()
    assert (_sample(folder / "year.tif", GAP_2021) == 2021).all()


def test_timeline_in_the_config_is_checked(tmp_path: Path) -> None:
    base = _config_data(tmp_path, tmp_path / "catalog")
    path = tmp_path / "regions.yaml"
    assert parse_config(base, path).timeline is True
    assert parse_config({k: v for k, v in base.items() if k != "timeline"}, path).timeline is False
    with pytest.raises(ConfigError, match=r"timeline: 'yes' is not of type 'boolean'"):
        parse_config({**base, "timeline": "yes"}, path)
    ee = {"kind": "earthengine", "project": "my-project"}
    with pytest.raises(
        ConfigError, match=r"timeline: needs an embedding method in methods \(cosine, angle\)"
    ):
        parse_config({**base, "source": ee, "methods": ["s2-difference"]}, path)


def test_consecutive_pairs_need_two_years(mirror: Path, tmp_path: Path) -> None:
    data = _config_data(mirror, tmp_path / "catalog")
    config = load_config(_write_config(tmp_path, data))
    assert len(list(itertools.pairwise(SPEC.years))) == 3  # the mirror's years give three pairs
    assert config.pairs.resolve(list(SPEC.years)) == list(itertools.pairwise(SPEC.years))


def test_a_source_failing_midway_leaves_no_timeline_behind(mirror: Path, tmp_path: Path) -> None:
    """A file of 2020 missing from the mirror: the timeline fails as a job, nothing half-written stays."""
    broken = tmp_path / "mirror"
    shutil.copytree(mirror, broken)
    victim = sorted((broken / "2020").rglob("*.tiff"))[0]
    victim.unlink()
    data = _config_data(broken, tmp_path / "catalog", methods=["cosine"], pairs=[[2018, 2019], [2020, 2021]])
    outcomes = {o.job.item_id: o for o in run(load_config(_write_config(tmp_path, data)))}
    timeline = outcomes["town_2018_2021_cosine_timeline"]
    assert timeline.status == "failed" and victim.name in (timeline.error or "")
    assert outcomes["town_2018_2019_cosine"].status == "done"  # the pair without 2020 is made
    assert not (tmp_path / "catalog" / COLLECTION).exists() or not any(
        p.name != "items.parquet" for p in (tmp_path / "catalog" / COLLECTION).iterdir()
    )
    assert leftovers(tmp_path / "catalog") == []


class EstimateRecorder(SilentReporter):
    def __init__(self) -> None:
        self.estimates: list[tuple[int, int]] = []

    def run_estimate(self, requests: int, pixels: int) -> None:
        self.estimates.append((requests, pixels))


def test_the_earthengine_source_makes_the_same_timeline(made, mirror: Path, tmp_path: Path) -> None:
    """Through the real Earth Engine client and the stand-in serving the same mirror: the same years where
    something was planted or nothing has data, the same magnitudes, and the requests counted on the item."""
    from tests.ee_standin import StandinServer

    with StandinServer(mirror) as server:
        source = {"kind": "earthengine", "project": "test-project", "url": server.url}
        data = _config_data(mirror, tmp_path / "catalog", methods=["cosine"], source=source)
        before = len(server.log)
        reporter = EstimateRecorder()
        outcomes = {
            o.job.item_id: o.status for o in run(load_config(_write_config(tmp_path, data)), reporter)
        }
        requests = [e for e in server.log[before:] if e.endpoint.endswith("computePixels")]
    assert outcomes["town_2018_2021_cosine_timeline"] == "done", outcomes
    ee_folder, ee_item = _item(tmp_path / "catalog", "cosine")
    aef_folder, _ = _item(made[0], "cosine")
    for area in [*(a for a, _, _ in PLANTED.values()), EMPTY]:
        np.testing.assert_array_equal(
            _sample(ee_folder / "year.tif", area), _sample(aef_folder / "year.tif", area)
        )
    with rasterio.open(ee_folder / "magnitude.tif") as ee, rasterio.open(aef_folder / "magnitude.tif") as aef:
        np.testing.assert_allclose(ee.read(1), aef.read(1), atol=1e-3)
    change_items = [
        read_json(p)
        for p in (tmp_path / "catalog" / CHANGE_COLLECTION).glob("*/*.json")
        if "_timeline" not in p.name
    ]
    spent = ee_item["properties"]["change:requests"] + sum(
        i["properties"]["change:requests"] for i in change_items
    )
    assert ee_item["properties"]["change:requests"] > 0 and spent == len(requests)
    assert reporter.estimates[0][0] == len(requests)  # the run said so before it started


@pytest.mark.parametrize(("point", "status"), [("staged", "done"), ("switched", "skipped")])
def test_a_run_killed_while_committing_a_timeline_is_recovered(
    mirror: Path, tmp_path: Path, stac_schemas: Path, point: str, status: str
) -> None:
    """The real ``changecat run`` killed with its timeline staged (its files written, not switched in) or
    switched in (its collection not yet written): the next run removes the leftovers and remakes it, or
    finds it whole and up to date and links it; the catalog then validates."""
    catalog = tmp_path / "catalog"
    data = _config_data(mirror, catalog, methods=["cosine"], pairs=[[2020, 2021]], timeline=False)
    config = _write_config(tmp_path, data)
    assert [o.status for o in run(load_config(config))] == ["done"]  # the change item, up to date below
    data["timeline"] = True
    _write_config(tmp_path, data)
    holder = start_held(point, tmp_path / "held", "run", config)
    signal_and_wait(holder, signal.SIGKILL)
    outcomes = {o.job.item_id: o.status for o in run(load_config(config))}
    assert outcomes == {"town_2020_2021_cosine": "skipped", "town_2020_2021_cosine_timeline": status}
    assert validate_catalog(catalog, stac_schemas) == []
    links = read_json(catalog / COLLECTION / "collection.json")["links"]
    assert [lk["href"] for lk in links if lk["rel"] == "item"] == [
        "./town_2020_2021_cosine_timeline/town_2020_2021_cosine_timeline.json"
    ]
