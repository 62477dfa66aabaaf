"""The regions config: valid configs parse; each kind of bad input gets one clear ConfigError."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import yaml
from shapely.geometry import shape

from catalog.extension import own_schemas
from generator.config import (
    DEFAULT_MAX_PIXELS,
    MAX_CONFIG_BYTES,
    AefSourceConfig,
    EarthEngineSourceConfig,
    load_config,
)
from generator.errors import ConfigError, YearNotAvailableError
from generator.plan import check_years
from generator.regions import MAX_GEOJSON_BYTES
from generator.tiling import Tiling, needs_tiles

SELF_INTERSECTING = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


def base_config() -> dict[str, Any]:
    return {
        "catalog": {"id": "berlin-change", "title": "Berlin", "output": "out/catalog"},
        "source": {"kind": "aef", "root": "data/aef"},
        "pairs": [[2017, 2024]],
        "methods": ["cosine"],
        "regions": [
            {"id": "berlin", "title": "Berlin", "bbox": [13.08, 52.33, 13.76, 52.68]},
            {
                "id": "grunewald",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[13.20, 52.46], [13.27, 52.46], [13.27, 52.50], [13.20, 52.46]]],
                },
            },
        ],
    }


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "regions.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_of(tmp_path: Path, data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return str(info.value)


def test_valid_config_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "aoi").mkdir()
    tegel = {
        "type": "Polygon",
        "coordinates": [[[13.26, 52.55], [13.30, 52.55], [13.30, 52.57], [13.26, 52.55]]],
    }
    (tmp_path / "aoi" / "tegel.geojson").write_text(json.dumps({"type": "Feature", "geometry": tegel}))
    data = base_config()
    data["regions"].append({"id": "tegel", "file": "aoi/tegel.geojson"})
    cfg = load_config(write(tmp_path, data))
    assert cfg.catalog.output == (tmp_path / "out" / "catalog").resolve()
    assert cfg.source == AefSourceConfig(root=str((tmp_path / "data" / "aef").resolve()))
    assert [r.id for r in cfg.regions] == ["berlin", "grunewald", "tegel"]
    assert cfg.regions[0].geometry.bounds == (13.08, 52.33, 13.76, 52.68)
    assert cfg.regions[2].geometry.bounds == (13.26, 52.55, 13.30, 52.57)
    assert cfg.pairs.resolve([2017, 2024]) == [(2017, 2024)]
    assert cfg.methods == ("cosine",)


def test_methods_default_to_cosine_and_url_roots_are_kept(tmp_path: Path) -> None:
    data = base_config()
    del data["methods"]
    data["source"]["root"] = "s3://bucket/aef"
    cfg = load_config(write(tmp_path, data))
    assert cfg.methods == ("cosine",)
    assert cfg.source == AefSourceConfig(root="s3://bucket/aef")


def test_pair_rules_resolve_against_available_years(tmp_path: Path) -> None:
    data = base_config()
    data["pairs"] = "consecutive"
    assert load_config(write(tmp_path, data)).pairs.resolve([2017, 2018, 2020]) == [
        (2017, 2018),
        (2018, 2020),
    ]
    data["pairs"] = {"baseline": 2018}
    cfg = load_config(write(tmp_path, data))
    assert cfg.pairs.resolve([2017, 2018, 2020, 2021]) == [(2018, 2020), (2018, 2021)]
    assert cfg.pairs.years() == {2018}


def test_earthengine_source_defaults(tmp_path: Path) -> None:
    data = base_config()
    data["source"] = {"kind": "earthengine", "project": "my-gcp-project"}
    src = load_config(write(tmp_path, data)).source
    assert isinstance(src, EarthEngineSourceConfig)
    assert src.collection == "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
    assert src.max_concurrency == 16


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml(tmp_path: Path) -> None:
    message = error_of(tmp_path, "catalog: {id: x\nregions: [")
    assert message.startswith(f"{tmp_path / 'regions.yaml'}: malformed YAML at line 2")
    assert "<unicode string>" not in message


def test_empty_config(tmp_path: Path) -> None:
    assert "the config is empty; it needs catalog, source, pairs and regions" in error_of(tmp_path, "")


def test_output_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "catalog").write_text("not a folder")
    assert "catalog.output: " in error_of(tmp_path, base_config())
    assert "is a file; name a folder for the catalog" in error_of(tmp_path, base_config())


def test_earthengine_project_id(tmp_path: Path) -> None:
    data = base_config()
    data["source"] = {"kind": "earthengine", "project": "Demo"}
    assert "project 'Demo' is not a Google Cloud project id" in error_of(tmp_path, data)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("top", "valid keys here: catalog, source, pairs, methods, regions"),
        ("catalog", "valid keys here: id, title, description, output"),
        ("region", "valid keys here: id, title, bbox, geometry, file"),
    ],
)
def test_unknown_keys_list_the_valid_ones(tmp_path: Path, where: str, expected: str) -> None:
    data = base_config()
    {"top": data, "catalog": data["catalog"], "region": data["regions"][0]}[where]["colour"] = "red"
    message = error_of(tmp_path, data)
    assert "'colour' was unexpected" in message
    assert expected in message


@pytest.mark.parametrize("bad_id", ["Berlin", "-berlin", "ber lin", "../etc", "a" * 64, ""])
def test_region_id_must_match_the_pattern(tmp_path: Path, bad_id: str) -> None:
    data = base_config()
    data["regions"][0]["id"] = bad_id
    message = error_of(tmp_path, data)
    assert "regions[0].id" in message
    assert "is not a valid id: use 1-63 lowercase letters" in message


def test_duplicate_region_ids(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][1]["id"] = "berlin"
    assert "duplicate region id 'berlin'" in error_of(tmp_path, data)


def test_region_needs_exactly_one_geometry(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][0]["file"] = "x.geojson"
    assert "exactly one of 'bbox', 'geometry' or 'file'" in error_of(tmp_path, data)


def test_self_intersecting_polygon(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][1]["geometry"] = SELF_INTERSECTING
    message = error_of(tmp_path, data)
    assert "regions[1] (grunewald): geometry: invalid geometry (Self-intersection" in message
    assert "make_valid" in message


def test_empty_polygon(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][1]["geometry"] = {"type": "Polygon", "coordinates": []}
    assert "geometry: the geometry is empty" in error_of(tmp_path, data)


def test_point_is_not_a_polygon(tmp_path: Path) -> None:
    (tmp_path / "p.geojson").write_text(json.dumps({"type": "Point", "coordinates": [13.3, 52.5]}))
    data = base_config()
    data["regions"][1] = {"id": "point", "file": "p.geojson"}
    assert "file p.geojson: must be a Polygon or MultiPolygon, found Point" in error_of(tmp_path, data)


def test_feature_collection_with_a_line(tmp_path: Path) -> None:
    line = {"type": "LineString", "coordinates": [[13.3, 52.5], [13.4, 52.5]]}
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": line}]}
    (tmp_path / "l.geojson").write_text(json.dumps(fc))
    data = base_config()
    data["regions"][1] = {"id": "line", "file": "l.geojson"}
    assert "file l.geojson: features[0]: must be a Polygon or MultiPolygon, found LineString" in error_of(
        tmp_path, data
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"type": "FeatureCollection", "features": [1]}, "a feature without a geometry object"),
        ({"type": "FeatureCollection", "features": {"a": 1}}, "the FeatureCollection has no features"),
        ({"type": "FeatureCollection", "features": []}, "the FeatureCollection has no features"),
        ({"type": "Feature", "geometry": {"type": "Polygon"}}, "malformed coordinates"),
        ({"type": "Feature", "geometry": None}, "a feature without a geometry object"),
        ([1, 2], "expected a GeoJSON object, found list"),
    ],
)
def test_malformed_geojson_files(tmp_path: Path, doc: Any, expected: str) -> None:
    (tmp_path / "bad.geojson").write_text(json.dumps(doc))
    data = base_config()
    data["regions"][1] = {"id": "bad", "file": "bad.geojson"}
    message = error_of(tmp_path, data)
    assert "regions[1] (bad): file bad.geojson" in message
    assert expected in message


def test_overlapping_features_make_one_region(tmp_path: Path) -> None:
    def square(x: float) -> dict:
        ring = [[x, 52.0], [x + 0.02, 52.0], [x + 0.02, 52.02], [x, 52.02], [x, 52.0]]
        return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}

    fc = {"type": "FeatureCollection", "features": [square(13.0), square(13.01), square(13.05)]}
    (tmp_path / "parts.geojson").write_text(json.dumps(fc))
    data = base_config()
    data["regions"][1] = {"id": "parts", "file": "parts.geojson"}
    region = load_config(write(tmp_path, data)).regions[1].geometry
    assert region.geom_type == "MultiPolygon" and len(region.geoms) == 2
    assert region.area == pytest.approx(0.03 * 0.02 + 0.02 * 0.02)


def test_missing_and_broken_geojson_files(tmp_path: Path) -> None:
    (tmp_path / "broken.geojson").write_text("{not json")
    data = base_config()
    data["regions"] = [{"id": "a", "file": "missing.geojson"}, {"id": "b", "file": "broken.geojson"}]
    message = error_of(tmp_path, data)
    assert "regions[0] (a): file missing.geojson: cannot read it" in message
    assert "regions[1] (b): file broken.geojson: not valid JSON" in message


def test_bbox_with_min_above_max(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][0]["bbox"] = [13.0, 52.7, 13.5, 52.3]
    assert "must be [west, south, east, north] with south < north" in error_of(tmp_path, data)


def test_bbox_out_of_range(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][0]["bbox"] = [13.0, 52.0, 13.5, 95.0]
    message = error_of(tmp_path, data)
    assert "regions[0].bbox[3]" in message
    assert "95.0 is greater than the maximum of 90" in message


def test_bbox_across_the_antimeridian_asks_for_a_split(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][0]["bbox"] = [179.5, -17.0, -179.5, -16.0]
    assert "crosses the antimeridian, split it into two regions at 180°" in error_of(tmp_path, data)


def test_polygon_across_the_antimeridian_asks_for_a_split(tmp_path: Path) -> None:
    ring = [[179.5, -17.0], [-179.5, -17.0], [-179.5, -16.0], [179.5, -16.0], [179.5, -17.0]]
    data = base_config()
    data["regions"][1]["geometry"] = {"type": "Polygon", "coordinates": [ring]}
    assert "crosses the antimeridian; split it into two regions at 180°" in error_of(tmp_path, data)


@pytest.mark.parametrize("pair", [[2024, 2017], [2020, 2020]])
def test_from_year_must_be_before_to_year(tmp_path: Path, pair: list[int]) -> None:
    data = base_config()
    data["pairs"] = [pair]
    assert f"pairs[0]: {pair}: the first year must be before the second" in error_of(tmp_path, data)


def test_bad_pairs_value(tmp_path: Path) -> None:
    data = base_config()
    data["pairs"] = "all"
    assert "a list of [from, to] years, the word 'consecutive', or {baseline: YEAR}" in error_of(
        tmp_path, data
    )


def test_unknown_method_lists_the_valid_ones(tmp_path: Path) -> None:
    data = base_config()
    data["methods"] = ["cosine", "euclid"]
    assert "unknown method 'euclid'; valid methods: cosine, angle, s2-difference" in error_of(tmp_path, data)


def test_sentinel2_needs_the_earthengine_source(tmp_path: Path) -> None:
    data = base_config()
    data["methods"] = ["cosine", "s2-difference"]
    message = error_of(tmp_path, data)
    assert "'s2-difference' needs the earthengine source; the aef source computes cosine, angle" in message
    data["source"]["s2_context"] = True
    assert "an 'aef' source takes exactly: kind, root" in error_of(tmp_path, data)
    data["source"] = {"kind": "earthengine", "project": "my-gcp-project", "s2_context": True}
    cfg = load_config(write(tmp_path, data))
    assert cfg.methods == ("cosine", "s2-difference")
    assert isinstance(cfg.source, EarthEngineSourceConfig) and cfg.source.s2_context


def test_earthengine_concurrency_limit(tmp_path: Path) -> None:
    data = base_config()
    data["source"] = {"kind": "earthengine", "project": "my-gcp-project", "max_concurrency": 100}
    assert "max_concurrency (≤ 40)" in error_of(tmp_path, data)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = base_config()
    data["pairs"] = [[2024, 2017]]
    data["methods"] = ["euclid"]
    data["regions"][1]["geometry"] = SELF_INTERSECTING
    assert "invalid config (3 problem(s))" in error_of(tmp_path, data)


def test_year_the_source_lacks_lists_the_available_ones() -> None:
    with pytest.raises(YearNotAvailableError) as info:
        check_years({2016, 2017}, [2017, 2018, 2024], "mirror /data/aef")
    assert str(info.value) == (
        "mirror /data/aef has no data for year(s) 2016; available years: 2017, 2018, 2024"
    )


def test_aef_root_with_an_unsupported_scheme(tmp_path: Path) -> None:
    data = base_config()
    data["source"]["root"] = "ftp://example.org/aef"
    assert "source.root 'ftp://example.org/aef': unsupported scheme ftp://" in error_of(tmp_path, data)


# --- hostile and oversized configs ----------------------------------------------------------------------

MEMORY_BOUND = 1024 * 1024 * 1024
"""Address space the config load may use in the bomb test: the old loader reached 3.5 GB before failing."""

BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))
    + "catalog: {id: x}\nsource: {kind: aef, root: .}\npairs: [[2017, 2024]]\n"
    + "regions:\n  - {id: r, geometry: {type: Polygon, coordinates: *i}}\n"
)
"""A "billion laughs" YAML: 9⁹ ≈ 387 million strings from a few hundred bytes, inside a region geometry."""

LOAD_UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from generator.config import load_config
from generator.errors import ConfigError
try:
    load_config(sys.argv[1])
except ConfigError as exc:
    print(exc)
    sys.exit(2)
"""


def test_alias_bomb_fails_fast_with_a_clear_message_within_a_memory_bound(tmp_path: Path) -> None:
    path = write(tmp_path, BOMB)
    assert len(BOMB) < 700
    result = subprocess.run(
        [sys.executable, "-c", LOAD_UNDER_LIMIT, str(path), str(MEMORY_BOUND)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the YAML expands to more than 500,000 values once its aliases (*name) are repeated" in (
        result.stdout
    )


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = "catalog: &c {id: x, loop: *c}\n"
    assert "an alias refers to a value that contains it" in error_of(tmp_path, text)


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    text = yaml.safe_dump(base_config()) + "x-ring: &ring [[13.2, 52.46], [13.27, 52.46], [13.27, 52.5]]\n"
    assert load_config(write(tmp_path, text.replace("x-ring: &ring", "# no alias"))).regions
    ring = "[[13.20, 52.46], [13.27, 52.46], [13.27, 52.50], [13.20, 52.46]]"
    doc = (
        "catalog: {id: x}\nsource: {kind: aef, root: .}\npairs: [[2017, 2024]]\nregions:\n"
        f"  - {{id: a, geometry: {{type: Polygon, coordinates: &ring [{ring}]}}}}\n"
        "  - {id: b, geometry: {type: Polygon, coordinates: *ring}}\n"
    )
    cfg = load_config(write(tmp_path, doc))
    assert cfg.regions[0].geometry.equals(cfg.regions[1].geometry)


def test_oversized_config_file_is_refused_before_parsing(tmp_path: Path) -> None:
    text = yaml.safe_dump(base_config()) + "#" + "x" * MAX_CONFIG_BYTES + "\n"
    message = error_of(tmp_path, text)
    assert "the config file is larger than 2 MiB; put large geometries in GeoJSON files" in message


def test_oversized_geojson_file_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "huge.geojson", "wb") as f:
        f.truncate(MAX_GEOJSON_BYTES + 1)  # sparse: no disk space used
    data = base_config()
    data["regions"][1] = {"id": "huge", "file": "huge.geojson"}
    assert "file huge.geojson: 64 MiB is more than the 64 MiB a region file may have" in error_of(
        tmp_path, data
    )


def test_whole_world_bbox_is_refused_naming_utm_latitudes(tmp_path: Path) -> None:
    """Too large for one grid, so it would be tiled on UTM zones, which end at 80°S and 84°N (issue 10;
    before, it was refused for spanning 60 zones)."""
    data = base_config()
    data["regions"][0]["bbox"] = [-180, -90, 180, 90]
    message = error_of(tmp_path, data)
    assert "regions[0] (berlin): is cut into tiles on UTM zones (too large for one grid)" in message
    assert "reaches 90°S–90°N; UTM covers 80°S–84°N" in message


def test_a_region_may_reach_one_zone_beyond_its_own(tmp_path: Path) -> None:
    """Within 9° of its zone's central meridian a region keeps one grid; wider ones are tiled (issue 10),
    no longer refused."""
    data = base_config()
    data["max_pixels"] = 10**12
    data["tiling"] = {"above_pixels": 10**12}
    data["regions"] = [{"id": "three-zones", "bbox": [6.5, 52.0, 23.5, 52.2]}]  # zones 32-34, centre 15°E
    region = load_config(write(tmp_path, data)).regions[0]
    assert region.id == "three-zones" and not needs_tiles(region.geometry, Tiling(above_pixels=10**12))
    data["regions"] = [{"id": "wide", "bbox": [5.0, 52.0, 25.0, 52.2]}]
    region = load_config(write(tmp_path, data)).regions[0]
    assert needs_tiles(region.geometry, Tiling(above_pixels=10**12)), "reaches 10° from 15°E: tiled"


def test_region_larger_than_max_pixels_says_how_to_split(tmp_path: Path) -> None:
    """A single grid above max_pixels (lowered below the tiling threshold) is refused as before; a tiled
    region above it is refused naming the limit."""
    data = base_config()
    data["max_pixels"] = 10_000_000
    message = error_of(tmp_path, data)
    assert "regions[0] (berlin): its 10 m grid is 4,702 × 3,995 = 18,784,490 pixels" in message
    assert "more than max_pixels (10,000,000); split it into 4 regions" in message
    data = base_config()
    data["regions"][0]["bbox"] = [10.0, 40.0, 22.0, 50.0]  # about 1,000 × 1,100 km: 11.6 Gpx, tiled
    assert load_config(write(tmp_path, data)).max_pixels == DEFAULT_MAX_PIXELS
    data["max_pixels"] = 10_000_000_000
    message = error_of(tmp_path, data)
    assert "regions[0] (berlin): its tiles in 3 UTM zone part(s) cover about 11,576,451,920 pixels" in message
    assert "more than max_pixels (10,000,000,000), the most a region may have in all" in message


def test_max_pixels_must_be_a_positive_integer(tmp_path: Path) -> None:
    data = base_config()
    data["max_pixels"] = 0
    assert "max_pixels: 0 is less than the minimum of 1" in error_of(tmp_path, data)


def dense_ring(vertices: int, lon: float = 13.3, lat: float = 52.5) -> list[list[float]]:
    """A wavy ring around (lon, lat), about 4 km across, with ``vertices`` distinct vertices."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = 0.02 * (1 + 0.05 * np.sin(40 * t))
    ring = np.column_stack([lon + 1.6 * r * np.cos(t), lat + r * np.sin(t)]).round(8).tolist()
    return [*ring, ring[0]]


def test_dense_geometry_is_simplified_below_a_tenth_of_a_metre(tmp_path: Path) -> None:
    ring = dense_ring(50_000)
    (tmp_path / "dense.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    data = base_config()
    data["regions"][1] = {"id": "dense", "file": "dense.geojson"}
    geom = load_config(write(tmp_path, data)).regions[1].geometry
    exact = shape({"type": "Polygon", "coordinates": [ring]})
    assert shapely.get_num_coordinates(geom) < 5_000
    assert geom.is_valid
    assert geom.buffer(1.01e-6).covers(exact) and exact.buffer(1.01e-6).covers(geom)  # moved ≤ 0.11 m


def test_geometry_too_complex_even_after_simplifying(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # A star with 250,000 random spikes: nothing is below 0.1 m, so nothing can be removed (and checking
    # its validity alone would take half a minute).
    t = np.linspace(0, 2 * np.pi, 250_000, endpoint=False)
    r = 0.02 * (1 + 0.3 * rng.random(t.size))
    ring = np.column_stack([13.3 + r * np.cos(t), 52.5 + r * np.sin(t)]).tolist()
    (tmp_path / "star.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    data = base_config()
    data["regions"][1] = {"id": "star", "file": "star.geojson"}
    message = error_of(tmp_path, data)
    assert "regions[1] (star): file star.geojson: 250,001 vertices, still about " in message
    assert "at most 50,000 are supported" in message


def test_malformed_region_ids_are_schema_problems_not_crashes(tmp_path: Path) -> None:
    data = base_config()
    data["regions"][0]["id"] = ["berlin"]
    data["regions"][1]["id"] = {"name": "grunewald"}
    message = error_of(tmp_path, data)
    assert "regions[0].id: ['berlin'] is not of type 'string'" in message
    assert "regions[1].id: {'name': 'grunewald'} is not of type 'string'" in message


def test_several_different_problems_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "catalog").write_text("a file")
    data = base_config()
    data["catalog"]["colour"] = "red"
    data["source"]["root"] = "ftp://example.org/aef"
    data["regions"][0]["id"] = "Berlin"  # a schema problem ...
    data["methods"] = ["cosine", "euclid"]  # ... and semantic ones elsewhere
    data["pairs"] = [[2024, 2017], [2017]]
    data["regions"][1]["geometry"] = SELF_INTERSECTING
    data["regions"].append({"id": "world", "bbox": [-180, -90, 180, 90]})
    data["regions"].append({"id": "world", "bbox": [13.0, 52.0, 13.1, 52.1]})
    message = error_of(tmp_path, data)
    expected = [
        "catalog: Additional properties are not allowed ('colour' was unexpected)",
        "pairs[0]: [2024, 2017]: the first year must be before the second",
        "pairs[1]: [2017] is too short",
        "regions[0].id: 'Berlin' is not a valid id",
        "source.root 'ftp://example.org/aef': unsupported scheme ftp://",
        "methods: unknown method 'euclid'",
        "regions[1] (grunewald): geometry: invalid geometry (Self-intersection",
        "regions[2] (world): is cut into tiles on UTM zones (too large for one grid) but reaches 90°S–90°N",
        "regions[3] (world): duplicate region id 'world'",
    ]
    missing = [e for e in expected if e not in message]
    assert not missing, message
    assert f"invalid config ({len(expected)} problem(s))" in message


WHEEL_SCHEMAS = """
import generator, generator.config, catalog.extension
print(generator.__file__)
print(generator.config.schemas_dir())
regions = generator.config.schemas_dir() / "regions/v1.0.0/schema.json"
for path in [*catalog.extension.own_schemas().values(), regions]:
    print(path, path.is_file())
"""


def test_own_schemas_resolve_in_an_installed_wheel(tmp_path: Path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    repo = Path(__file__).resolve().parents[1]
    wheel = next(iter(WheelBuilder(str(repo)).build(directory=str(tmp_path / "dist"), versions=["standard"])))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    result = subprocess.run(
        [sys.executable, "-c", WHEEL_SCHEMAS],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(site / "generator" / "__init__.py")  # the wheel's copy, not the source tree
    assert lines[1] == str(site / "changecat" / "schemas")
    expected = 2 + len(own_schemas()) + 1  # own and vendored schemas, then regions
    assert len(lines) == expected and all(line.endswith(" True") for line in lines[2:]), lines
