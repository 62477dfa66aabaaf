"""`changecat run` with the Earth Engine source, through the real client and the local stand-in: the same
products and catalog as the AEF source on the same mirror."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

from catalog.validate import validate_catalog
from changecat.pipeline import SilentReporter, run
from generator.config import load_config
from generator.demo import prepare_demo
from tests.ee_standin import StandinServer
from tests.ee_standin.server import CLOUD_SCORE_SYSTEM_VERSION, S2_SYSTEM_VERSION
from tests.test_cli import changecat

COLLECTION = "google-satellite-embedding-v1-annual"
TOLERANCE = 1e-3
REGIONS = [
    {"id": "town", "bbox": [11.94, 52.37, 12.06, 52.43]},  # 820×670 px across UTM 32N/33N
    {
        "id": "fire",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[11.95, 52.372], [11.98, 52.372], [11.965, 52.392], [11.95, 52.372]]],
        },
    },
]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ee_run")
    prepare_demo(out)
    return out / "demo" / "aef"


SYSTEM_VERSION = 1722016811296000
"""The collection's system:version (microseconds): 2024-07-26T18:00:11Z."""


@pytest.fixture(scope="module")
def standin(mirror: Path):
    properties = {"version": "1.0", "system:version": SYSTEM_VERSION}
    with StandinServer(mirror, collection_properties=properties) as server:
        yield server


def utc(system_version: int) -> str:
    return datetime.fromtimestamp(system_version / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pixel_requests(server: StandinServer, since: int = 0) -> list:
    return [e for e in server.log[since:] if e.endpoint.endswith("computePixels")]


def write_config(folder: Path, source: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "catalog": {"id": "ee-vs-aef", "output": "catalog"},
        "source": source,
        "pairs": [[2017, 2024], [2020, 2024]],
        "methods": ["cosine", "angle"],
        "regions": REGIONS,
    }
    path = folder / "regions.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class EstimateRecorder(SilentReporter):
    def __init__(self) -> None:
        self.estimates: list[tuple[int, int]] = []

    def run_estimate(self, requests: int, pixels: int) -> None:
        self.estimates.append((requests, pixels))


RUN_FACTS: dict = {}
"""What the `both` fixture saw of the Earth Engine run: computePixels requests made, the estimate given."""


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, mirror: Path, standin: StandinServer) -> tuple[Path, Path]:
    """The same config run on the AEF mirror and, through the stand-in, on Earth Engine."""
    base = tmp_path_factory.mktemp("both")
    aef = write_config(base / "aef", {"kind": "aef", "root": str(mirror)})
    ee = write_config(base / "ee", {"kind": "earthengine", "project": "test-project", "url": standin.url})
    aef_reporter, ee_reporter = EstimateRecorder(), EstimateRecorder()
    assert [o.status for o in run(load_config(aef), aef_reporter)] == ["done"] * 8
    before = len(standin.log)
    assert [o.status for o in run(load_config(ee), ee_reporter)] == ["done"] * 8
    RUN_FACTS.update(
        requests=pixel_requests(standin, before), estimates=ee_reporter.estimates, aef=aef_reporter.estimates
    )
    return base / "aef" / "catalog", base / "ee" / "catalog"


def items(catalog: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (catalog / COLLECTION).glob("*/*.json")}


def test_both_catalogs_are_valid(both: tuple[Path, Path], stac_schemas: Path) -> None:
    for catalog in both:
        assert validate_catalog(catalog, stac_schemas) == []


def test_the_same_change_rasters(both: tuple[Path, Path]) -> None:
    aef, ee = both
    assert items(aef).keys() == items(ee).keys()
    for item_id in items(aef):
        with rasterio.open(aef / COLLECTION / item_id / "change.tif") as a:
            want, want_profile = a.read(1), (a.crs, a.transform, a.shape)
        with rasterio.open(ee / COLLECTION / item_id / "change.tif") as e:
            got, got_profile = e.read(1), (e.crs, e.transform, e.shape)
        assert got_profile == want_profile, item_id
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=item_id)
        assert float(np.nanmax(np.abs(got - want))) <= TOLERANCE, item_id


def test_the_same_statistics(both: tuple[Path, Path]) -> None:
    aef, ee = (items(c) for c in both)
    for item_id, want in aef.items():
        got = ee[item_id]
        ws, gs = want["assets"]["change"]["statistics"], got["assets"]["change"]["statistics"]
        assert gs["count"] == ws["count"]
        for key in ("minimum", "maximum", "mean", "stddev"):
            assert gs[key] == pytest.approx(ws[key], abs=TOLERANCE), (item_id, key)
        for w, g in zip(
            want["properties"]["change:changed_area"], got["properties"]["change:changed_area"], strict=True
        ):
            assert g["area_km2"] == pytest.approx(w["area_km2"], rel=0.01, abs=0.002), item_id
        assert got["properties"]["change:dataset"] == want["properties"]["change:dataset"]
        assert (
            "computed in Google Earth Engine from its GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL image collection"
            in got["properties"]["processing:lineage"]
        )


def test_items_record_the_dataset_release(both: tuple[Path, Path], mirror: Path) -> None:
    aef, ee = (items(c) for c in both)
    assert {i["properties"]["change:dataset_version"] for i in ee.values()} == {
        f"version 1.0, system:version {SYSTEM_VERSION} ({utc(SYSTEM_VERSION)})"
    }
    size = (mirror / "aef_index.parquet").stat().st_size
    for item in aef.values():
        assert item["properties"]["change:dataset_version"].startswith(f"aef_index.parquet, {size} bytes, ")


def test_items_record_the_requests_made_and_the_run_said_so_first(both: tuple[Path, Path]) -> None:
    aef, ee = (items(c) for c in both)
    made = RUN_FACTS["requests"]
    counts = [i["properties"]["change:requests"] for i in ee.values()]
    assert all(n > 0 for n in counts) and sum(counts) == len(made)
    assert all("change:requests" not in i["properties"] for i in aef.values())
    # No split or retry in this run: the estimate printed before it is exact.
    assert RUN_FACTS["estimates"] == [(len(made), sum(e.width * e.height for e in made))]
    assert RUN_FACTS["aef"] == [], "a source that meters nothing has nothing to estimate"


def test_the_cli_runs_the_earthengine_source(tmp_path: Path, standin: StandinServer) -> None:
    config = write_config(tmp_path, {"kind": "earthengine", "project": "test-project", "url": standin.url})
    before = len(standin.log)
    result = changecat("run", config, env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "8 made, 0 up to date, 0 failed" in result.stderr
    assert "town_2017_2024_cosine" in result.stdout
    made = pixel_requests(standin, before)
    mpx = sum(e.width * e.height for e in made) / 1e6
    estimate = f"Earth Engine: this run asks for up to {len(made)} computePixels requests, {mpx:.1f} Mpx"
    assert estimate in " ".join(result.stderr.split())
    assert result.stderr.index("Earth Engine: this run") < result.stderr.index("town_2017_2024_cosine")


def test_unreachable_earthengine_is_one_clear_error(tmp_path: Path) -> None:
    source = {"kind": "earthengine", "project": "test-project", "url": "http://127.0.0.1:9"}
    result = changecat("run", write_config(tmp_path, source), env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot open Earth Engine at http://127.0.0.1:9")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def with_s2(tmp_path_factory: pytest.TempPathFactory, standin: StandinServer) -> tuple[Path, list]:
    """Cosine and the blog's Sentinel-2 difference, with both years' S2 composites on every item."""
    folder = tmp_path_factory.mktemp("s2")
    source = {"kind": "earthengine", "project": "test-project", "url": standin.url, "s2_context": True}
    config = load_config(write_config(folder, source))
    config = replace(config, methods=("cosine", "s2-difference"), regions=config.regions[1:])  # fire only
    before = len(standin.log)
    outcomes = run(config)
    assert [o.status for o in outcomes] == ["done"] * 4, [o.error for o in outcomes]
    return folder / "catalog", pixel_requests(standin, before)


def test_s2_items_are_valid_and_carry_the_composites(with_s2: tuple[Path, list], stac_schemas: Path) -> None:
    catalog, _ = with_s2
    assert validate_catalog(catalog, stac_schemas) == []
    cos = json.loads(
        (catalog / COLLECTION / "fire_2017_2024_cosine" / "fire_2017_2024_cosine.json").read_text()
    )
    s2_coll = catalog / "copernicus-s2-sr-harmonized"
    s2 = json.loads(
        (s2_coll / "fire_2017_2024_s2-difference" / "fire_2017_2024_s2-difference.json").read_text()
    )
    assert s2["properties"]["change:dataset"] == "COPERNICUS/S2_SR_HARMONIZED"
    assert s2["properties"]["change:dataset_version"] == (
        f"COPERNICUS/S2_SR_HARMONIZED system:version {S2_SYSTEM_VERSION} ({utc(S2_SYSTEM_VERSION)}); "
        f"GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED system:version {CLOUD_SCORE_SYSTEM_VERSION} "
        f"({utc(CLOUD_SCORE_SYSTEM_VERSION)})"
    )
    assert json.loads((s2_coll / "collection.json").read_text())["license"] == "other"
    for item in (cos, s2):
        assert {"change", "thumbnail", "s2_2017", "s2_2024"} <= item["assets"].keys()
        for year in (2017, 2024):
            asset = item["assets"][f"s2_{year}"]
            assert asset["roles"] == ["data", "reflectance"] and asset["nodata"] == 0  # DN, not "visual"
            assert [b["name"] for b in asset["bands"]] == ["B4", "B3", "B2"]


def test_each_composite_is_downloaded_once_per_run(with_s2: tuple[Path, list]) -> None:
    catalog, requests = with_s2
    # One tile per download: 4 change maps (2 pairs × 2 methods) and 3 composites (2017, 2020, 2024), and
    # the cosine items' 3 embedding pictures (one request per year, generator/preview.py).
    assert [e.status for e in requests] == [200] * 10
    assert sum(e.response_bytes for e in requests) > 0
    folders = [catalog / COLLECTION / f"fire_{p}_cosine" for p in ("2017_2024", "2020_2024")]
    folders += [
        catalog / "copernicus-s2-sr-harmonized" / f"fire_{p}_s2-difference"
        for p in ("2017_2024", "2020_2024")
    ]
    s2_2024 = {(f / "s2_2024.tif").read_bytes() for f in folders}
    assert len(s2_2024) == 1  # four items, one download


def test_the_s2_difference_agrees_with_the_composites(with_s2: tuple[Path, list]) -> None:
    catalog, _ = with_s2
    folder = catalog / "copernicus-s2-sr-harmonized" / "fire_2017_2024_s2-difference"
    with rasterio.open(folder / "change.tif") as ds:
        diff = ds.read(1)
    with rasterio.open(folder / "s2_2017.tif") as a, rasterio.open(folder / "s2_2024.tif") as b:
        first, second = a.read().astype(np.float64), b.read().astype(np.float64)
    both = (first > 0).all(axis=0) & (second > 0).all(axis=0)
    assert both.mean() > 0.3  # a triangle: about half its grid
    np.testing.assert_array_equal(np.isnan(diff), ~both)
    want = np.sqrt((((second - first) / 10000.0) ** 2).sum(axis=0))
    # The composites are rounded to whole DN: at most 0.5 DN per band off the server's float median.
    assert float(np.max(np.abs(diff[both] - want[both]))) <= 1e-4
    assert float(np.nanmax(diff)) > 0.1  # the stand-in's planted surface change shows
