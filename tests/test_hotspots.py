"""Hotspots: block-wise labelling equals labelling the whole raster; the demo's planted changes are found,
catalogued as a GeoParquet asset, and readable as GeoJSON."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import Point, box, shape

from catalog.agree import disagreement
from catalog.files import read_json
from catalog.hotspots import HOTSPOTS_NAME, read_hotspots
from catalog.validate import validate_catalog
from changecat.cli import cli
from changecat.pipeline import run
from generator.config import load_config, parse_config
from generator.demo import DEMO_SPEC, prepare_demo
from generator.errors import ConfigError
from generator.grid import Grid, to_crs
from generator.hotspots import (
    DEFAULT_MIN_AREA_M2,
    DEFAULT_THRESHOLDS,
    HotspotAccumulator,
    HotspotParams,
    hotspot_rows,
)
from generator.plan import Job, Region
from generator.synthetic import planted_value

COLLECTION = "google-satellite-embedding-v1-annual"
GRID = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), 90, 100)
QUANTIZATION_TOLERANCE = 0.01
"""int8 quantization of the embeddings moves a planted change value by a few thousandths."""
MIN_IOU = 0.8


def smooth_field(seed: int, shape_: tuple[int, int] = (100, 90)) -> np.ndarray:
    """A float32 field in [0, 1] with blobs of every size and shape, and a NaN hole."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape_), 2.0)
    field = ((field - field.min()) / (field.max() - field.min())).astype(np.float32)
    field[40:50, 10:30] = np.nan
    return field


def regular(size: int) -> list[Window]:
    return list(GRID.windows(size))


def irregular(seed: int) -> list[Window]:
    """A tiling with blocks of uneven sizes, as an Earth Engine source splitting tiles gives."""
    rng = random.Random(seed)
    rows = sorted({0, GRID.height, *rng.sample(range(1, GRID.height), 6)})
    cols = sorted({0, GRID.width, *rng.sample(range(1, GRID.width), 5)})
    return [
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in itertools.pairwise(rows)
        for c0, c1 in itertools.pairwise(cols)
    ]


def accumulate(values: np.ndarray, windows: list[Window], params: HotspotParams, seed: int = 0):
    windows = list(windows)
    random.Random(seed).shuffle(windows)  # a concurrent source yields blocks in any order
    acc = HotspotAccumulator(GRID, params)
    for w in windows:
        acc.update(w, values[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width])
    return acc.result()


@pytest.mark.parametrize(
    "windows",
    [regular(16), regular(7), irregular(1), irregular(2)],
    ids=["16px", "7px", "uneven1", "uneven2"],
)
@pytest.mark.parametrize("threshold", [0.45, 0.6])
def test_blockwise_components_equal_labelling_the_whole_array(windows, threshold: float) -> None:
    values = smooth_field(3)
    found = accumulate(values, windows, HotspotParams(threshold, 0.0))
    with np.errstate(invalid="ignore"):
        mask = values >= threshold
    labels, n = ndimage.label(mask)  # scipy's default structure: 4-connectivity
    assert len(found) == n > 10
    expected = {}
    whole = labels.astype(np.int32)
    for geom, value in shapes(whole, mask=whole > 0, connectivity=4, transform=GRID.transform):
        expected[int(value)] = shape(geom)
    rows, cols = np.indices(values.shape)
    centroids = []
    for label in range(1, n + 1):
        inside = labels == label
        x = float(np.mean(GRID.transform.c + (cols[inside] + 0.5) * 10))
        y = float(np.mean(GRID.transform.f - (rows[inside] + 0.5) * 10))
        centroids.append((x, y))
    matched = set()
    for h in found:
        distances = [np.hypot(h.centroid[0] - x, h.centroid[1] - y) for x, y in centroids]
        label = int(np.argmin(distances)) + 1
        assert distances[label - 1] < 1e-6
        matched.add(label)
        inside = labels == label
        assert h.pixels == int(inside.sum())
        assert h.max_change == pytest.approx(float(values[inside].max()))
        assert h.mean_change == pytest.approx(float(values[inside].mean()), rel=1e-6)
        assert h.polygon.geom_type == "Polygon"
        assert h.polygon.symmetric_difference(expected[label]).area == pytest.approx(0.0, abs=1e-6)
        assert h.polygon.area == pytest.approx(h.area_m2)
    assert matched == set(range(1, n + 1))  # one hotspot per component, none twice


def test_an_area_straddling_four_blocks_is_one_polygon() -> None:
    values = np.zeros(GRID.shape, dtype=np.float32)
    values[10:22, 12:21] = 0.5  # rows 10..21 and cols 12..20 cross the 16 px borders at row 16 and col 16
    found = accumulate(values, regular(16), HotspotParams(0.2, 0.0))
    assert len(found) == 1
    (h,) = found
    assert h.polygon.geom_type == "Polygon"
    assert h.pixels == 12 * 9
    x0, y0 = GRID.transform @ (12, 22)
    x1, y1 = GRID.transform @ (21, 10)
    assert h.polygon.bounds == (x0, y0, x1, y1)
    assert len(h.polygon.interiors) == 0
    assert h.polygon.area == 12 * 9 * 100.0


def test_nodata_is_no_hotspot_and_a_hole_stays_a_hole() -> None:
    values = np.full(GRID.shape, np.nan, dtype=np.float32)  # all nodata: nothing
    assert accumulate(values, regular(16), HotspotParams(0.2, 0.0)) == []
    values[:] = 0.0
    values[20:40, 20:40] = 0.6
    values[25:35, 25:35] = np.nan  # a nodata hole inside a changed area crossing a border
    (h,) = accumulate(values, regular(16), HotspotParams(0.2, 0.0))
    assert h.pixels == 400 - 100
    assert len(h.polygon.interiors) == 1
    assert h.polygon.area == pytest.approx(300 * 100.0)


def test_small_areas_are_dropped_inside_a_block_and_across_borders() -> None:
    values = np.zeros(GRID.shape, dtype=np.float32)
    values[2:4, 2:5] = 0.5  # 6 pixels inside one block
    values[15:17, 30:33] = 0.5  # 6 pixels across the border at row 16
    values[40:50, 40:50] = 0.5  # 100 pixels
    for min_pixels, expected in ((6, [100, 6, 6]), (7, [100])):
        found = accumulate(values, regular(16), HotspotParams(0.2, min_pixels * 100.0))
        assert sorted((h.pixels for h in found), reverse=True) == expected


def test_ranks_follow_area_times_mean_change() -> None:
    values = np.zeros(GRID.shape, dtype=np.float32)
    values[0:10, 0:20] = 0.25  # 200 px × 0.25 = 50
    values[30:38, 30:38] = 0.9  # 64 px × 0.9 = 57.6: smaller, yet ranked before the larger one
    values[60:70, 60:70] = 0.3  # 100 px × 0.3 = 30
    rows = hotspot_rows(accumulate(values, regular(16), HotspotParams(0.2, 0.0)), GRID)
    assert [(r["rank"], r["area_m2"]) for r in rows] == [(1, 6400.0), (2, 20000.0), (3, 10000.0)]
    scores = [r["area_m2"] * r["mean_change"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    for row in rows:  # WGS84 rectangles now, each holding its centroid
        assert row["geometry"].geom_type == "Polygon"
        assert row["geometry"].contains(Point(row["centroid_lon"], row["centroid_lat"]))
        assert 13 < row["centroid_lon"] < 14 and 52 < row["centroid_lat"] < 53


def test_the_angle_default_is_the_cosine_default_as_a_similarity() -> None:
    assert DEFAULT_THRESHOLDS["cosine"] == 0.2
    assert DEFAULT_THRESHOLDS["angle"] == pytest.approx(planted_value(0.2, "angle"))
    assert DEFAULT_THRESHOLDS["angle"] == pytest.approx(0.2048, abs=5e-5)
    assert DEFAULT_MIN_AREA_M2 == 5000.0


def _config(tmp: Path, **extra: object) -> tuple[dict, Path]:
    config_path = prepare_demo(tmp)
    data = yaml.safe_load(config_path.read_text())
    data.update(extra)
    return data, config_path


def test_hotspot_settings_in_the_config(tmp_path: Path) -> None:
    data, path = _config(tmp_path, hotspots={"threshold": {"angle": 0.3}, "min_area_m2": 20000})
    config = parse_config(data, path)
    assert config.hotspots.params("angle") == HotspotParams(0.3, 20000.0)
    assert config.hotspots.params("cosine") == HotspotParams(DEFAULT_THRESHOLDS["cosine"], 20000.0)
    assert parse_config(_config(tmp_path)[0], path).hotspots.params("angle").min_area_m2 == 5000.0
    with pytest.raises(ConfigError) as err:
        parse_config(_config(tmp_path, hotspots={"threshold": {"cosin": 0.3, "angle": 1.5}})[0], path)
    message = str(err.value)
    assert "'cosin' is not one of the config's methods" in message
    assert "1.5 is above the largest angle change" in message
    with pytest.raises(ConfigError, match=r"hotspots\.min_area_m2"):
        parse_config(_config(tmp_path, hotspots={"min_area_m2": -1})[0], path)
    with pytest.raises(ConfigError, match=r"hotspots: .*'treshold'"):
        parse_config(_config(tmp_path, hotspots={"treshold": 0.3})[0], path)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo mirror's town and forest, 2017→2024, both methods (the hole is nodata in 2017)."""
    out = tmp_path_factory.mktemp("hotspots")
    data, path = _config(out, pairs=[[2017, 2024]])
    data["regions"] = data["regions"][:2]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    outcomes = run(load_config(path))
    assert [o.status for o in outcomes] == ["done"] * 4
    return out / "catalog"


def _item(catalog: Path, item_id: str) -> tuple[Path, dict]:
    folder = catalog / COLLECTION / item_id
    return folder, read_json(folder / f"{item_id}.json")


@pytest.mark.parametrize("method", ["cosine", "angle"])
def test_each_planted_change_is_one_hotspot(demo: Path, method: str, stac_schemas: Path) -> None:
    folder, item = _item(demo, f"demo-town_2017_2024_{method}")
    rows = read_hotspots(folder / HOTSPOTS_NAME)
    crs = "EPSG:32633"
    assert len(rows) == len(DEMO_SPEC.plants)  # no hotspot where nothing changed
    for plant in DEMO_SPEC.plants:
        truth = to_crs(plant.geometry, "EPSG:4326", crs)
        hits = [r for r in rows if to_crs(r["geometry"], "EPSG:4326", crs).intersects(truth)]
        assert len(hits) == 1, plant
        found = to_crs(hits[0]["geometry"], "EPSG:4326", crs)
        assert found.intersection(truth).area / found.union(truth).area >= MIN_IOU
        assert hits[0]["mean_change"] == pytest.approx(
            planted_value(plant.change, method), abs=QUANTIZATION_TOLERANCE
        )
    hole = DEMO_SPEC.holes[0].geometry
    with rasterio.open(folder / "change.tif") as ds:  # the hole is nodata in the product
        x, y = to_crs(hole.centroid, "EPSG:4326", ds.crs.to_string()).coords[0]
        assert np.isnan(next(ds.sample([(x, y)]))[0])
    assert not any(r["geometry"].intersects(hole) for r in rows)
    scores = [r["area_m2"] * r["mean_change"] for r in rows]
    assert [r["rank"] for r in rows] == [1, 2, 3] and scores == sorted(scores, reverse=True)
    p = item["properties"]
    assert p["change:hotspot_count"] == 3
    assert p["change:hotspot_area"] == pytest.approx(sum(r["area_m2"] for r in rows))
    assert p["change:hotspot_threshold"] == pytest.approx(DEFAULT_THRESHOLDS[method])
    assert p["change:hotspot_min_area"] == DEFAULT_MIN_AREA_M2
    asset = item["assets"]["hotspots"]
    assert asset["href"] == "./hotspots.parquet"
    assert asset["type"] == "application/vnd.apache.parquet" and asset["roles"] == ["data"]
    assert asset["file:size"] == (folder / HOTSPOTS_NAME).stat().st_size
    assert validate_catalog(demo, stac_schemas) == []
    definition = read_json(demo / COLLECTION / "collection.json")["item_assets"]["hotspots"]
    assert definition["type"] == "application/vnd.apache.parquet" and definition["roles"] == ["data"]


def test_changing_the_hotspot_settings_remakes_the_products() -> None:
    region = Region("town", "Town", box(13.5, 52.0, 13.6, 52.1))
    job = Job(region, 2017, 2024, "cosine", GRID, HotspotParams(0.2))
    same = job.fingerprint("source", "1.0")
    assert replace(job, hotspots=HotspotParams(0.2)).fingerprint("source", "1.0") == same
    assert replace(job, hotspots=HotspotParams(0.3)).fingerprint("source", "1.0") != same
    assert replace(job, hotspots=HotspotParams(0.2, 1e4)).fingerprint("source", "1.0") != same


def test_the_table_is_geoparquet(demo: Path) -> None:
    folder, _ = _item(demo, "forest_2017_2024_cosine")
    table = pq.read_table(folder / HOTSPOTS_NAME)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert "crs" not in column  # GeoParquet: absent crs means OGC:CRS84 (lon, lat)
    west, south, east, north = column["bbox"]
    assert 11.9 < west < east < 12.1 and 52.3 < south < north < 52.5
    assert table.column_names == [
        "geometry",
        "rank",
        "area_m2",
        "mean_change",
        "max_change",
        "centroid_lon",
        "centroid_lat",
    ]


def test_a_changed_hotspots_file_makes_the_product_stale(demo: Path, tmp_path: Path) -> None:
    folder, item = _item(demo, "forest_2017_2024_angle")
    assert disagreement(folder, item) is None
    copy = tmp_path / folder.name
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / HOTSPOTS_NAME).write_bytes((copy / HOTSPOTS_NAME).read_bytes()[:-10])
    assert "hotspots.parquet" in (disagreement(copy, item) or "")
    (copy / HOTSPOTS_NAME).unlink()
    assert disagreement(copy, item) == "./hotspots.parquet is missing"


def test_cli_writes_geojson(demo: Path, tmp_path: Path) -> None:
    folder, _ = _item(demo, "demo-town_2017_2024_cosine")
    rows = read_hotspots(folder / HOTSPOTS_NAME)
    out = tmp_path / "hotspots.geojson"
    result = CliRunner().invoke(cli, ["hotspots", str(folder), "--geojson", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection"
    assert [f["properties"]["rank"] for f in doc["features"]] == [1, 2, 3]
    for feature, row in zip(doc["features"], rows, strict=True):
        assert shape(feature["geometry"]).equals(row["geometry"])
        assert feature["properties"]["area_m2"] == row["area_m2"]
    result = CliRunner().invoke(cli, ["hotspots", str(folder / HOTSPOTS_NAME), "--geojson", "-"])
    assert result.exit_code == 0 and json.loads(result.stdout) == doc
    result = CliRunner().invoke(cli, ["hotspots", str(folder / f"{folder.name}.json")])
    assert result.exit_code == 0 and "rank" in result.output
    result = CliRunner().invoke(cli, ["hotspots", str(tmp_path)])
    assert result.exit_code != 0 and "no item here" in str(result.exception)


def test_a_threshold_above_every_change_gives_an_empty_valid_table(
    tmp_path: Path, stac_schemas: Path
) -> None:
    data, path = _config(tmp_path, pairs=[[2017, 2024]], methods=["cosine"], hotspots={"threshold": 0.9})
    data["regions"] = [r for r in data["regions"] if r["id"] == "forest"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (outcome,) = run(load_config(path))
    assert outcome.status == "done", outcome.error
    folder, item = _item(tmp_path / "catalog", "forest_2017_2024_cosine")
    assert read_hotspots(folder / HOTSPOTS_NAME) == []
    assert item["properties"]["change:hotspot_count"] == 0
    assert item["properties"]["change:hotspot_threshold"] == 0.9
    assert validate_catalog(tmp_path / "catalog", stac_schemas) == []
