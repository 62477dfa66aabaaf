"""The whole pipeline on the demo mirror: known answers, a valid catalog, re-runs, failures."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box

from catalog.validate import validate_catalog
from changecat.pipeline import JobOutcome, prune, run
from generator.config import load_config
from generator.demo import AIRFIELD, DEMO_SPEC, FOREST, prepare_demo
from generator.errors import SourceError, YearNotAvailableError
from generator.grid import to_crs
from generator.plan import Job
from tests.catalog_helpers import write_cog

COLLECTION = "google-satellite-embedding-v1-annual"
FIRE, AIRFIELD_PLANT = DEMO_SPEC.plants[1].geometry, DEMO_SPEC.plants[2].geometry
HOLE = DEMO_SPEC.holes[0].geometry
QUANTIZATION_TOLERANCE = 0.01
"""int8 quantization of the embeddings moves a planted change value by a few thousandths."""


class Recorder:
    """A reporter that keeps the events, to check what the CLI would draw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def run_started(self, jobs: list[Job]) -> None:
        self.events.append(("run", len(jobs)))

    def job_started(self, job: Job, blocks: int) -> None:
        self.events.append(("job", (job.item_id, blocks)))

    def block_done(self, job: Job, detail: str = "") -> None:
        self.events.append(("block", job.item_id))

    def job_finished(self, outcome: JobOutcome) -> None:
        self.events.append((outcome.status, outcome.job.item_id))

    def note(self, message: str) -> None:
        self.events.append(("note", message))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[JobOutcome], Recorder]:
    out = tmp_path_factory.mktemp("demo")
    recorder = Recorder()
    outcomes = run(load_config(prepare_demo(out)), recorder)
    return out / "catalog", outcomes, recorder


def item_path(catalog: Path, item_id: str) -> Path:
    return catalog / COLLECTION / item_id / f"{item_id}.json"


def value_at(cog: Path, lon: float, lat: float) -> float:
    with rasterio.open(cog) as ds:
        x, y = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
        return float(next(ds.sample([(x, y)]))[0])


def test_every_demo_job_is_done_and_the_catalog_is_valid(demo, stac_schemas: Path) -> None:
    catalog, outcomes, _ = demo
    assert [o.status for o in outcomes] == ["done"] * 12
    assert validate_catalog(catalog, stac_schemas) == []
    for o in outcomes:
        assert o.product is not None
        assert cog_validate(o.product.cog_path, strict=True)[:2] == (True, [])
        assert item_path(catalog, o.job.item_id).is_file()


def test_planted_changes_come_out_with_their_values(demo) -> None:
    catalog, _, _ = demo
    cos = catalog / COLLECTION / "demo-town_2017_2024_cosine" / "change.tif"
    ang = catalog / COLLECTION / "demo-town_2017_2024_angle" / "change.tif"
    for plant in DEMO_SPEC.plants:
        c = plant.geometry.centroid
        assert value_at(cos, c.x, c.y) == pytest.approx(plant.change, abs=QUANTIZATION_TOLERANCE)
        expected_angle = math.acos(1 - plant.change) / math.pi
        assert value_at(ang, c.x, c.y) == pytest.approx(expected_angle, abs=QUANTIZATION_TOLERANCE)
    # Unchanged land: the same vector in both years.
    assert value_at(cos, 11.942, 52.428) == pytest.approx(0.0, abs=QUANTIZATION_TOLERANCE)


def test_a_change_after_the_pair_is_not_seen(demo) -> None:
    catalog, _, _ = demo
    cog = catalog / COLLECTION / "demo-town_2020_2024_cosine" / "change.tif"
    construction = DEMO_SPEC.plants[0]
    assert construction.year == 2020
    c = construction.geometry.centroid
    assert value_at(cog, c.x, c.y) == pytest.approx(0.0, abs=QUANTIZATION_TOLERANCE)


def test_a_nodata_hole_is_nodata_only_in_pairs_with_that_year(demo) -> None:
    catalog, _, _ = demo
    c = HOLE.centroid
    assert math.isnan(value_at(catalog / COLLECTION / "demo-town_2017_2024_cosine" / "change.tif", c.x, c.y))
    assert not math.isnan(
        value_at(catalog / COLLECTION / "demo-town_2020_2024_cosine" / "change.tif", c.x, c.y)
    )


def test_a_region_across_two_utm_zones(demo) -> None:
    catalog, _, _ = demo
    cog = catalog / COLLECTION / "airfield_2017_2024_cosine" / "change.tif"
    with rasterio.open(cog) as ds:
        assert ds.crs.to_epsg() == 32633  # the zone of the region's centroid (12.0°E)
    c = AIRFIELD_PLANT.centroid
    west, east = value_at(cog, 11.995, c.y), value_at(cog, 12.005, c.y)  # 32N side and 33N side
    assert west == pytest.approx(0.25, abs=QUANTIZATION_TOLERANCE)
    assert east == pytest.approx(0.25, abs=QUANTIZATION_TOLERANCE)


def test_outside_the_region_polygon_is_nodata(demo) -> None:
    catalog, _, _ = demo
    cog = catalog / COLLECTION / "forest_2017_2024_cosine" / "change.tif"
    with rasterio.open(cog) as ds:
        data = ds.read(1)
        crs = ds.crs.to_string()
    # A lon/lat box is not a box in UTM: the grid covers its bounds, the corners outside are NaN.
    region_area = to_crs(FOREST, "EPSG:4326", crs).area
    valid_area = np.count_nonzero(~np.isnan(data)) * 100.0
    assert np.isnan(data).any()
    assert valid_area == pytest.approx(region_area, rel=0.01)


def test_statistics_and_changed_area_match_the_planted_fire(demo) -> None:
    catalog, _, _ = demo
    item = json.loads(item_path(catalog, "forest_2017_2024_cosine").read_text())
    with rasterio.open(item_path(catalog, "forest_2017_2024_cosine").parent / "change.tif") as ds:
        data = ds.read(1)
        crs = ds.crs.to_string()
    stats = item["assets"]["change"]["statistics"]
    valid = data[~np.isnan(data)]
    assert stats["count"] == valid.size
    assert stats["mean"] == pytest.approx(float(valid.mean(dtype=np.float64)), rel=1e-6)
    assert stats["maximum"] == pytest.approx(float(valid.max()), abs=1e-6)
    fire_km2 = to_crs(FIRE, "EPSG:4326", crs).area / 1e6
    areas = {a["threshold"]: a for a in item["properties"]["change:changed_area"]}
    assert areas[0.2]["area_km2"] == pytest.approx(fire_km2, rel=0.02)
    assert areas[0.5]["area_km2"] == pytest.approx(fire_km2, rel=0.02)
    assert areas[0.2]["fraction"] == pytest.approx(fire_km2 * 1e6 / (valid.size * 100.0), rel=0.02)
    assert item["properties"]["change:percentiles"]["p50"] == pytest.approx(0.0, abs=QUANTIZATION_TOLERANCE)


def test_progress_is_reported_per_job_and_per_block(demo) -> None:
    _, _, recorder = demo
    assert recorder.events[0] == ("run", 12)
    started = [e[1] for e in recorder.events if e[0] == "job"]
    assert len(started) == 12
    for item_id, blocks in started:
        assert blocks >= 1
        assert sum(1 for e in recorder.events if e == ("block", item_id)) == blocks


def test_a_second_run_redoes_nothing(tmp_path: Path) -> None:
    config = load_config(prepare_demo(tmp_path))
    first = run(config)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "catalog").rglob("*.tif")}
    second = run(config)
    assert [o.status for o in first] == ["done"] * 12
    assert [o.status for o in second] == ["skipped"] * 12
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "catalog").rglob("*.tif")} == stamp
    forced = run(config, force=True)
    assert [o.status for o in forced] == ["done"] * 12


def small_config(tmp_path: Path, mirror: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "catalog": {"id": "small", "output": str(tmp_path / "catalog")},
        "source": {"kind": "aef", "root": str(mirror)},
        "pairs": [[2017, 2024]],
        "methods": ["cosine"],
        "regions": [{"id": "forest", "bbox": list(FOREST.bounds)}],
    }
    data.update(changes)
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    prepare_demo(out)
    return out / "demo" / "aef"


def test_a_region_without_data_fails_alone(tmp_path: Path, mirror: Path, stac_schemas: Path) -> None:
    regions = [
        {"id": "forest", "bbox": list(FOREST.bounds)},
        {"id": "faraway", "bbox": [30.0, 10.0, 30.1, 10.1]},
    ]
    outcomes = run(load_config(small_config(tmp_path, mirror, regions=regions)))
    assert [o.status for o in outcomes] == ["done", "failed"]
    assert "region 'faraway' has no data" in (outcomes[1].error or "")
    assert not (tmp_path / "catalog" / COLLECTION / "faraway_2017_2024_cosine").exists()
    assert validate_catalog(tmp_path / "catalog", stac_schemas) == []


def test_a_year_the_mirror_lacks(tmp_path: Path, mirror: Path) -> None:
    with pytest.raises(YearNotAvailableError, match=r"year\(s\) 2019; available years: 2017, 2020, 2024"):
        run(load_config(small_config(tmp_path, mirror, pairs=[[2019, 2024]])))


def test_a_missing_source_root(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"aef_index\.parquet"):
        run(load_config(small_config(tmp_path, tmp_path / "no-such-mirror")))


def test_a_broken_tile_leaves_nothing_half_written(tmp_path: Path, mirror: Path, stac_schemas: Path) -> None:
    broken = tmp_path / "aef"
    shutil.copytree(mirror, broken)
    for tif in (broken / "2024").rglob("*.tiff"):
        tif.write_bytes(tif.read_bytes()[:4096])  # truncated: the header survives, the data does not
    regions = [{"id": "forest", "bbox": list(FOREST.bounds)}]
    ok = small_config(tmp_path, mirror, regions=regions, pairs=[[2017, 2020]])
    assert [o.status for o in run(load_config(ok))] == ["done"]
    outcomes = run(load_config(small_config(tmp_path, broken, regions=regions)))
    assert [o.status for o in outcomes] == ["failed"]
    assert "could not be read" in (outcomes[0].error or "")
    assert not (tmp_path / "catalog" / COLLECTION / "forest_2017_2024_cosine" / "change.tif").exists()
    assert not list((tmp_path / "catalog").rglob("*.tmp*"))
    assert validate_catalog(tmp_path / "catalog", stac_schemas) == []


def test_region_bounds_are_respected_by_the_grid(demo) -> None:
    catalog, _, _ = demo
    item = json.loads(item_path(catalog, "airfield_2017_2024_cosine").read_text())
    assert box(*item["bbox"]).buffer(1e-9).contains(AIRFIELD)
    assert item["properties"]["change:region"] == "airfield"


def test_a_region_inside_a_nodata_hole_fails_without_leftovers(tmp_path: Path, mirror: Path) -> None:
    inside_hole = [12.047, 52.422, 12.053, 52.426]
    config = small_config(tmp_path, mirror, regions=[{"id": "hole", "bbox": inside_hole}])
    outcomes = run(load_config(config))
    assert [o.status for o in outcomes] == ["failed"]
    assert "region 'hole' has no valid pixel for 2017→2024" in (outcomes[0].error or "")
    assert not (tmp_path / "catalog" / COLLECTION / "hole_2017_2024_cosine").exists()


def test_a_rerun_remakes_missing_files_and_follows_title_changes(tmp_path: Path, mirror: Path) -> None:
    path = small_config(tmp_path, mirror)
    assert [o.status for o in run(load_config(path))] == ["done"]
    folder = tmp_path / "catalog" / COLLECTION / "forest_2017_2024_cosine"
    (folder / "change.tif").unlink()
    assert [o.status for o in run(load_config(path))] == ["done"]
    assert (folder / "change.tif").is_file()
    data = yaml.safe_load(path.read_text())
    data["catalog"]["title"] = "A new title"
    path.write_text(yaml.safe_dump(data))
    assert [o.status for o in run(load_config(path))] == ["skipped"]
    assert json.loads((tmp_path / "catalog" / "catalog.json").read_text())["title"] == "A new title"
    data["regions"][0]["title"] = "The forest"
    path.write_text(yaml.safe_dump(data))
    assert [o.status for o in run(load_config(path))] == ["done"]
    item = json.loads((folder / "forest_2017_2024_cosine.json").read_text())
    assert item["properties"]["title"].startswith("The forest")


def two_region_config(tmp_path: Path, mirror: Path) -> Path:
    regions = [
        {"id": "forest", "bbox": list(FOREST.bounds)},
        {"id": "field", "bbox": [12.0, 52.385, 12.02, 52.40]},
    ]
    return small_config(tmp_path, mirror, regions=regions)


def flip_cog(path: Path) -> None:
    """Rewrite a COG upside down (same grid, same profile): its size may even stay the same."""
    with rasterio.open(path) as ds:
        values, crs, transform = ds.read(1), ds.crs.to_string(), ds.transform
    write_cog(path, values[::-1].copy(), crs, transform)


def edit_item(path: Path, asset_field: str, value: Any) -> None:
    item = json.loads(path.read_text())
    item["assets"]["change"][asset_field] = value
    path.write_text(json.dumps(item))


def test_a_plain_run_remakes_products_whose_item_and_files_disagree(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    config = load_config(two_region_config(tmp_path, mirror))
    assert [o.status for o in run(config)] == ["done", "done"]
    catalog = tmp_path / "catalog"
    forest, field = (catalog / COLLECTION / f"{r}_2017_2024_cosine" for r in ("forest", "field"))
    damages = {
        "deleted thumbnail": lambda: (forest / "thumbnail.png").unlink(),
        "flipped COG": lambda: flip_cog(forest / "change.tif"),
        "edited item (transform)": lambda: edit_item(
            forest / "forest_2017_2024_cosine.json", "proj:transform", [20.0, 0, 0, 0, -20.0, 0]
        ),
        "edited item (checksum)": lambda: edit_item(
            forest / "forest_2017_2024_cosine.json", "file:checksum", "1220" + "0" * 64
        ),
    }
    for what, damage in damages.items():
        damage()
        recorder = Recorder()
        assert [o.status for o in run(config, recorder)] == ["done", "skipped"], what
        assert any(e[0] == "note" and "remaking forest_2017_2024_cosine" in e[1] for e in recorder.events), (
            what
        )
        assert validate_catalog(catalog, stac_schemas) == [], what
    # Two products' COGs swapped: both remade.
    swap = tmp_path / "swap.tif"
    (forest / "change.tif").rename(swap)
    (field / "change.tif").rename(forest / "change.tif")
    swap.rename(field / "change.tif")
    assert [o.status for o in run(config)] == ["done", "done"]
    assert validate_catalog(catalog, stac_schemas) == []
    assert [o.status for o in run(config)] == ["skipped", "skipped"]


def test_changed_source_data_at_the_same_location_makes_new_products(tmp_path: Path, mirror: Path) -> None:
    import pyarrow.parquet as pq

    root = tmp_path / "aef"
    root.mkdir()
    for year in ("2017", "2020", "2024"):
        (root / year).symlink_to(mirror / year)
    shutil.copyfile(mirror / "aef_index.parquet", root / "aef_index.parquet")
    config = load_config(small_config(tmp_path, root))
    assert [o.status for o in run(config)] == ["done"]
    assert [o.status for o in run(config)] == ["skipped"]
    table = pq.read_table(root / "aef_index.parquet")
    pq.write_table(table.slice(0, table.num_rows), root / "aef_index.parquet", compression="gzip")
    assert [o.status for o in run(config)] == ["done"]  # the index changed: the data may have


def test_a_malformed_item_is_remade_without_advice_to_delete_the_catalog(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    config = load_config(two_region_config(tmp_path, mirror))
    run(config)
    item = tmp_path / "catalog" / COLLECTION / "forest_2017_2024_cosine" / "forest_2017_2024_cosine.json"
    item.write_text("{ broken")
    recorder = Recorder()
    outcomes = run(config, recorder)
    assert [o.status for o in outcomes] == ["done", "skipped"]
    notes = [e[1] for e in recorder.events if e[0] == "note"]
    assert any("not valid JSON" in n for n in notes) and not any("delete" in n for n in notes)
    assert validate_catalog(tmp_path / "catalog", stac_schemas) == []


def test_prune_removes_only_products_that_left_the_config(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    both = two_region_config(tmp_path, mirror)
    run(load_config(both), force=False)
    catalog = tmp_path / "catalog"
    field = catalog / COLLECTION / "field_2017_2024_cosine"
    (field / "notes.txt").write_text("mine, not changecat's")
    only_forest = load_config(small_config(tmp_path, mirror))
    assert prune(only_forest, dry_run=True) == [field]
    assert (field / "field_2017_2024_cosine.json").is_file()
    assert prune(only_forest) == [field]
    assert sorted(p.name for p in field.iterdir()) == ["notes.txt"]  # what changecat did not write stays
    coll = json.loads((catalog / COLLECTION / "collection.json").read_text())
    assert [link["href"] for link in coll["links"] if link["rel"] == "item"] == [
        "./forest_2017_2024_cosine/forest_2017_2024_cosine.json"
    ]
    assert validate_catalog(catalog, stac_schemas) == []
    # run --prune: the method changed, the cosine product goes, the angle one comes.
    angle = load_config(small_config(tmp_path, mirror, methods=["angle"]))
    assert [o.status for o in run(angle, prune=True)] == ["done"]
    assert sorted(p.name for p in (catalog / COLLECTION).iterdir() if not p.name.startswith(".")) == [
        "collection.json",
        "field_2017_2024_cosine",
        "forest_2017_2024_angle",
        "items.parquet",
    ]
    assert validate_catalog(catalog, stac_schemas) == []
