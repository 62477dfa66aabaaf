"""Regions too large for one grid become tiles per UTM zone: the plan (zones, lattice, antimeridian, poles,
limits) and a two-zone region run end to end on a synthetic AEF mirror (items per tile, pixels equal to
single-grid runs, VRT mosaics equal to their tiles, a valid catalog, re-runs and prune)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import yaml
from click.testing import CliRunner
from rasterio.windows import Window
from shapely.geometry import box, mapping

from catalog.layout import SAFE_ID_PATTERN
from catalog.mosaic import MOSAIC_FOLDER
from catalog.validate import validate_catalog
from changecat.cli import cli
from changecat.pipeline import JobOutcome, prune, run
from generator.config import DEFAULT_MAX_PIXELS, load_config
from generator.errors import ConfigError
from generator.grid import grid_for, to_crs
from generator.plan import Region, make_jobs, region_grids
from generator.synthetic import MirrorSpec, Plant, build_mirror
from generator.tiling import (
    DEFAULT_TILE_SIZE,
    MAX_TILES_PER_REGION,
    ZONE_DENSIFY_DEG,
    Tiling,
    region_areas,
    zone_parts,
)

COLLECTION = "google-satellite-embedding-v1-annual"
PLANT = Plant(box(11.996, 52.406, 12.004, 52.412), year=2022, change=0.8)  # across 12°E
SPEC = MirrorSpec(
    bounds=(11.985, 52.40, 12.015, 52.42), years=(2018, 2022), tile_size=64, plants=(PLANT,), seed=5
)
REGION = [11.987, 52.401, 12.013, 52.419]  # ~1.8 km × 2 km across the border of zones 32N and 33N
TILING = {"tile_size": 48, "above_pixels": 10_000}  # small tiles, so the small region is cut
ORIGIN = (5.0, 3.0)
"""A source lattice off the multiples of 10 m, as a source's ``grid_origin`` may give."""


def origin_of(crs: str) -> tuple[float, float]:
    return ORIGIN


# --- planning ------------------------------------------------------------------------------------------


def test_a_small_region_keeps_its_one_grid_and_id() -> None:
    region = Region("berlin", "Berlin", box(13.08, 52.33, 13.76, 52.68))
    jobs = make_jobs((region,), [(2017, 2024)], ("cosine",), origin_of)
    assert [j.item_id for j in jobs] == ["berlin_2017_2024_cosine"]
    assert jobs[0].tile is None and jobs[0].region == region
    assert jobs[0].grid == grid_for(region.geometry, origin=ORIGIN)


def test_a_20_by_10_degree_box_becomes_tiles_in_five_zones() -> None:
    geom = box(5.0, 45.0, 25.0, 55.0)
    areas = region_areas(geom, origin_of)
    zones = sorted({a.tile[:3] for a in areas if a.tile})
    assert zones == ["31n", "32n", "33n", "34n", "35n"]
    side = DEFAULT_TILE_SIZE * 10.0
    for area in areas:
        g = area.grid
        assert g.width <= DEFAULT_TILE_SIZE and g.height <= DEFAULT_TILE_SIZE
        assert g.crs == f"EPSG:326{area.tile[:2]}"
        x0, y0, x1, y1 = g.bounds
        # On the source's pixel lattice, and inside the lattice tile its id names.
        assert (x0 - ORIGIN[0]) % 10 == 0 and (y1 - ORIGIN[1]) % 10 == 0
        col, row = (int(v) for v in area.tile.split("_")[1:])
        tile = (ORIGIN[0] + col * side, ORIGIN[1] + row * side)
        assert tile[0] <= x0 < x1 <= tile[0] + side and tile[1] <= y0 < y1 <= tile[1] + side
    # The tiles' pieces cover the region exactly once: no gap, no overlap.
    pieces = [a.geometry for a in areas]
    assert len({a.tile for a in areas}) == len(areas)
    assert shapely.union_all(pieces).symmetric_difference(geom).area < 1e-7 * geom.area
    assert abs(sum(p.area for p in pieces) - geom.area) < 1e-7 * geom.area
    jobs = make_jobs((Region("box", "Box", geom),), [(2017, 2024), (2020, 2024)], ("cosine",), origin_of)
    assert len(jobs) == 2 * len(areas)
    assert all(SAFE_ID_PATTERN.match(j.item_id) for j in jobs)
    assert len({j.item_id for j in jobs}) == len(jobs)
    assert jobs[0].item_id == f"box_{areas[0].tile}_2017_2024_cosine"
    assert all(j.region.id == "box" for j in jobs)


def test_a_sliver_without_a_pixel_centre_gives_no_tile() -> None:
    crs, side, tiling = "EPSG:32633", 480.0, Tiling(tile_size=48, above_pixels=100)
    x0, y0 = 1042 * side, 12000 * side  # a lattice corner near 15°E, 52°N

    def tiles_of(reach_m: float) -> list[tuple[str | None, int]]:
        utm = box(x0 + 105, y0 + 105, x0 + side + reach_m, y0 + side - 105)
        areas = region_areas(to_crs(utm.segmentize(20.0), crs, "EPSG:4326"), lambda c: (0.0, 0.0), tiling)
        return [(a.tile, a.grid.width) for a in areas]

    assert tiles_of(2.0) == [("33n_1042_12000", 38)], "2 m into the next tile: no pixel centre there"
    assert tiles_of(8.0) == [("33n_1042_12000", 38), ("33n_1043_12000", 1)], "8 m: one column of centres"


def test_a_region_across_the_equator_gets_north_and_south_zones() -> None:
    areas = region_areas(box(30.0, -0.5, 31.0, 0.5), origin_of, Tiling(tile_size=2048, above_pixels=10**6))
    assert sorted({a.tile[:3] for a in areas}) == ["36n", "36s"]
    south = [a for a in areas if a.tile.startswith("36s")]
    assert {a.grid.crs for a in south} == {"EPSG:32736"}
    assert all(a.geometry.bounds[3] <= 0.0 for a in south)
    assert all(int(a.tile.split("_")[2]) > 0 for a in south), "rows count north from the false northing"


def test_regions_at_the_antimeridian_stay_in_zones_60_and_1() -> None:
    east = region_areas(box(174.0, -17.0, 180.0, -15.0), origin_of)
    west = region_areas(box(-180.0, -17.0, -174.0, -15.0), origin_of)
    assert {a.tile[:3] for a in east} == {"60s"} and {a.grid.crs for a in east} == {"EPSG:32760"}
    assert {a.tile[:3] for a in west} == {"01s"} and {a.grid.crs for a in west} == {"EPSG:32701"}
    assert [p.zone for p in zone_parts(box(170.0, 10.0, 180.0, 11.0))] == [59, 60]


def test_a_region_across_the_antimeridian_is_refused_by_the_config(tmp_path: Path) -> None:
    fiji = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[177, -18], [180, -18], [180, -16], [177, -18]]],
            [[[-180, -18], [-179, -18], [-179, -16], [-180, -18]]],
        ],
    }
    message = config_error(tmp_path, regions=[{"id": "fiji", "geometry": fiji}])
    assert "crosses the antimeridian; split it into two regions at 180°" in message


def test_tiles_stop_at_utm_latitudes_and_small_polar_regions_keep_one_grid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"reaches 60°N–86°N; UTM covers 80°S–84°N"):
        region_areas(box(-40.0, 60.0, -20.0, 86.0), origin_of)
    message = config_error(tmp_path, regions=[{"id": "antarctica", "bbox": [0.0, -85.0, 20.0, -70.0]}])
    assert "regions[0] (antarctica): is cut into tiles on UTM zones" in message
    assert "reaches 85°S–70°S; UTM covers 80°S–84°N (the polar caps use UPS" in message
    small = region_areas(box(10.0, 88.0, 10.2, 88.05), origin_of)
    assert [a.tile for a in small] == [None], "a small polar region keeps its one grid, as before"


def test_the_config_accepts_a_20_by_10_box_and_bounds_the_total(tmp_path: Path) -> None:
    path = write_config(tmp_path, Path("/nowhere"), regions=[{"id": "box", "bbox": [5, 45, 25, 55]}])
    config = load_config(path)
    assert config.tiling == Tiling() and config.max_pixels == DEFAULT_MAX_PIXELS
    message = config_error(tmp_path, regions=[{"id": "box", "bbox": [5, 45, 25, 55]}], max_pixels=10**10)
    assert "regions[0] (box): its tiles in 5 UTM zone part(s) cover about 18," in message
    assert "more than max_pixels (10,000,000,000), the most a region may have in all" in message
    tiny = {"tile_size": 16}
    message = config_error(tmp_path, regions=[{"id": "box", "bbox": [5, 45, 25, 55]}], tiling=tiny)
    assert f"tiles of 16 px, more than {MAX_TILES_PER_REGION:,} (the most tiles a region may have)" in message
    assert "tiling.tile_size: 8 is less than the minimum of 16" in config_error(
        tmp_path, tiling={"tile_size": 8}
    )
    assert "valid keys here: tile_size, above_pixels" in config_error(tmp_path, tiling={"size": 8})


# --- end to end on a two-zone mirror ---------------------------------------------------------------------


def write_config(tmp_path: Path, mirror: Path, name: str = "regions.yaml", **changes: Any) -> Path:
    data: dict[str, Any] = {
        "catalog": {"id": "tiles", "output": str(tmp_path / "catalog")},
        "source": {"kind": "aef", "root": str(mirror)},
        "pairs": [[2018, 2022]],
        "methods": ["cosine"],
        "regions": [{"id": "border", "title": "Border", "bbox": REGION}],
    }
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def config_error(tmp_path: Path, **changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, Path("/nowhere"), **changes))
    return str(info.value)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aef-two-zones")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> tuple[Path, list[JobOutcome]]:
    out = tmp_path_factory.mktemp("tiled")
    outcomes = run(load_config(write_config(out, mirror, tiling=TILING)))
    return out / "catalog", outcomes


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> dict[str, Path]:
    """The region's part in each zone run the way any small region is: one grid each (zone → COG). Tiles
    densify their part at ``ZONE_DENSIFY_DEG`` (a small region's mask does not), so these parts are given
    with the same vertices."""
    out = tmp_path_factory.mktemp("single")
    parts = [box(REGION[0], REGION[1], 12.0, REGION[3]), box(12.0, REGION[1], REGION[2], REGION[3])]
    regions = [
        {"id": name, "geometry": mapping(part.segmentize(ZONE_DENSIFY_DEG))}
        for name, part in zip(("west", "east"), parts, strict=True)
    ]
    outcomes = run(load_config(write_config(out, mirror, regions=regions)))
    assert [o.status for o in outcomes] == ["done", "done"]
    assert [o.job.tile for o in outcomes] == [None, None]
    zones = {o.job.grid.crs: o.product.cog_path for o in outcomes if o.product}
    assert sorted(zones) == ["EPSG:32632", "EPSG:32633"]
    return zones


def read(path: Path) -> tuple[np.ndarray, Any, str]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, str(ds.crs)


def window_in(path: Path, transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the COG at ``path`` on the grid (``transform``, ``shape``) of the same lattice."""
    with rasterio.open(path) as ds:
        col = (transform.c - ds.transform.c) / ds.transform.a
        row = (transform.f - ds.transform.f) / ds.transform.e
        assert col == round(col) and row == round(row), "same pixel lattice"
        win = Window(round(col), round(row), shape[1], shape[0])
        return ds.read(1, window=win, boundless=True, fill_value=np.nan)


def test_every_tile_is_an_item_of_its_region(tiled, stac_schemas: Path) -> None:
    catalog, outcomes = tiled
    assert outcomes and all(o.status == "done" for o in outcomes), [o.error for o in outcomes]
    tiles = [o.job.tile for o in outcomes]
    assert {t[:3] for t in tiles} == {"32n", "33n"} and len(tiles) >= 6
    for o in outcomes:
        item = json.loads((catalog / COLLECTION / o.job.item_id / f"{o.job.item_id}.json").read_text())
        assert item["id"] == f"border_{o.job.tile}_2018_2022_cosine"
        assert item["properties"]["change:region"] == "border"
        assert item["properties"]["change:tile"] == o.job.tile
        assert item["properties"]["title"] == f"Border, tile {o.job.tile}: change 2018→2022 (cosine)"
        assert item["assets"]["change"]["proj:code"] == f"EPSG:326{o.job.tile[:2]}"
        h, w = item["assets"]["change"]["proj:shape"]
        assert h <= TILING["tile_size"] and w <= TILING["tile_size"]
    assert validate_catalog(catalog, stac_schemas) == []


def test_tile_pixels_equal_a_single_grid_run_of_each_zone(tiled, single) -> None:
    _, outcomes = tiled
    compared = 0
    for o in outcomes:
        assert o.product is not None
        values, transform, crs = read(o.product.cog_path)
        expected = window_in(single[crs], transform, values.shape)
        np.testing.assert_array_equal(values, expected)
        compared += int(np.isfinite(values).sum())
    assert compared > 0.9 * 180 * 200, "most of the region's pixels were compared"
    planted = [o for o in outcomes if np.nanmax(read(o.product.cog_path)[0]) > 0.75]
    assert {o.job.tile[:3] for o in planted} == {"32n", "33n"}, "the plant across 12°E is in both zones"


def test_one_vrt_per_zone_opens_in_gdal_and_equals_its_tiles(tiled, single, stac_schemas: Path) -> None:
    catalog, outcomes = tiled
    folder = catalog / COLLECTION / MOSAIC_FOLDER
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["border_2018_2022_cosine_32n.vrt", "border_2018_2022_cosine_33n.vrt"]
    coll = json.loads((catalog / COLLECTION / "collection.json").read_text())
    for zone in ("32n", "33n"):
        asset = coll["assets"][f"mosaic-border_2018_2022_cosine_{zone}"]
        assert asset["href"] == f"./{MOSAIC_FOLDER}/border_2018_2022_cosine_{zone}.vrt"
        assert asset["roles"] == ["data", "mosaic"] and asset["proj:code"] == f"EPSG:326{zone[:2]}"
        with rasterio.open(folder / f"border_2018_2022_cosine_{zone}.vrt") as vrt:
            mosaic, transform, crs = vrt.read(1), vrt.transform, str(vrt.crs)
            assert crs == asset["proj:code"] and list(vrt.shape) == asset["proj:shape"]
            assert list(transform)[:6] == asset["proj:transform"]
        mine = [o for o in outcomes if o.job.tile.startswith(zone)]
        covered = np.zeros(mosaic.shape, dtype=bool)
        for o in mine:
            values, t, _ = read(o.product.cog_path)
            r, c = round((t.f - transform.f) / transform.e), round((t.c - transform.c) / transform.a)
            part = mosaic[r : r + values.shape[0], c : c + values.shape[1]]
            np.testing.assert_array_equal(part, values)
            covered[r : r + values.shape[0], c : c + values.shape[1]] = True
        assert covered.all() or np.isnan(mosaic[~covered]).all(), "outside the tiles: nodata"
        np.testing.assert_array_equal(mosaic, window_in(single[crs], transform, mosaic.shape))
    assert validate_catalog(catalog, stac_schemas) == []


def test_reruns_and_prune_keep_the_vrts_in_agreement(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    config = load_config(write_config(tmp_path, mirror, tiling=TILING))
    first = run(config)
    assert first and all(o.status == "done" for o in first)
    catalog = tmp_path / "catalog"
    folder = catalog / COLLECTION / MOSAIC_FOLDER
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert all(o.status == "skipped" for o in run(config))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "an idle re-run changes nothing"
    (folder / "border_2018_2022_cosine_33n.vrt").unlink()
    assert validate_catalog(catalog, stac_schemas) != [], "a missing VRT is reported"
    assert all(o.status == "skipped" for o in run(config))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "a plain run writes it again"
    # The region shrinks to its zone-32 part: a pruning run drops the 33N tiles and their VRT.
    west = [{"id": "border", "title": "Border", "bbox": [REGION[0], REGION[1], 11.999, REGION[3]]}]
    smaller = load_config(write_config(tmp_path, mirror, tiling=TILING, regions=west))
    outcomes = run(smaller, prune=True)
    assert {o.job.tile[:3] for o in outcomes} == {"32n"}
    assert sorted(p.name for p in folder.iterdir()) == ["border_2018_2022_cosine_32n.vrt"]
    items = sorted(p.name for p in (catalog / COLLECTION).iterdir() if p.name.startswith("border_"))
    assert items == sorted(o.job.item_id for o in outcomes)
    coll = json.loads((catalog / COLLECTION / "collection.json").read_text())
    assert [k for k in coll["assets"] if k.startswith("mosaic-")] == ["mosaic-border_2018_2022_cosine_32n"]
    with rasterio.open(folder / "border_2018_2022_cosine_32n.vrt") as vrt:
        cols = math.ceil((vrt.bounds.right - vrt.bounds.left) / 10)
        assert vrt.width == cols and np.isfinite(vrt.read(1)).any()
    assert validate_catalog(catalog, stac_schemas) == []
    # Pruning the whole region removes the mosaics folder with its last VRT.
    other = [{"id": "east", "bbox": [12.0, REGION[1], REGION[2], REGION[3]]}]
    prune(load_config(write_config(tmp_path, mirror, regions=other)))
    assert not folder.exists()


def test_tile_pieces_are_the_region_inside_each_tile(mirror: Path) -> None:
    config = load_config(write_config(Path("/tmp"), mirror, tiling=TILING))
    grids = region_grids(config.regions[0], origin_of, config.tiling)
    for tile, part, grid in grids:
        assert tile is not None and part.id == "border" and part.title == "Border"
        inside = to_crs(part.geometry, "EPSG:4326", grid.crs)
        assert box(*grid.bounds).buffer(1e-6).contains(inside)


def test_validate_info_and_hotspots_commands_work_on_tiles(tiled, stac_schemas: Path) -> None:
    catalog, outcomes = tiled
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(catalog), "--schemas", str(stac_schemas)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["info", str(catalog)], terminal_width=300)
    assert result.exit_code == 0, result.output
    for o in outcomes:
        assert o.job.item_id in result.output
    planted = max(outcomes, key=lambda o: np.nanmax(read(o.product.cog_path)[0]))
    folder = catalog / COLLECTION / planted.job.item_id
    result = runner.invoke(cli, ["hotspots", str(folder), "--geojson", "-"])
    assert result.exit_code == 0, result.output
    spots = json.loads(result.output)
    assert spots["type"] == "FeatureCollection" and len(spots["features"]) >= 1


def test_a_tiled_region_gets_a_timeline_per_tile(tmp_path: Path, mirror: Path, stac_schemas: Path) -> None:
    """One pair (2018→2022): a tile's timeline magnitude is that tile's change, its year 2022 where valid."""
    outcomes = run(load_config(write_config(tmp_path, mirror, tiling=TILING, timeline=True)))
    assert {o.status for o in outcomes} == {"done"}, [o.error for o in outcomes]
    changes = {o.job.tile: o.product.cog_path for o in outcomes if o.product is not None}
    timelines = [o.job for o in outcomes if o.job.item_id.endswith("_timeline")]
    assert len(changes) > 1 and sorted(t.tile for t in timelines) == sorted(changes)
    catalog = tmp_path / "catalog"
    for job in timelines:
        assert job.item_id == f"border_{job.tile}_2018_2022_cosine_timeline"
        (item_path,) = catalog.glob(f"*-timeline/{job.item_id}/{job.item_id}.json")
        item = json.loads(item_path.read_text())
        assert item["properties"]["change:tile"] == job.tile and job.tile in item["properties"]["title"]
        magnitude, transform, crs = read(item_path.parent / "magnitude.tif")
        change, change_transform, change_crs = read(changes[job.tile])
        assert (transform, crs) == (change_transform, change_crs)
        np.testing.assert_array_equal(magnitude, change)
        year, _, _ = read(item_path.parent / "year.tif")
        np.testing.assert_array_equal(year, np.where(np.isnan(change), 0, 2022))
    assert validate_catalog(catalog, stac_schemas) == []
