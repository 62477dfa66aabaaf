"""catalog.build / layout / render: the STAC objects built from products, and the change extension schema."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from rasterio.crs import CRS

from catalog.build import (
    CHANGE_ASSET,
    ProductFacts,
    build_catalog,
    build_collection,
    build_item,
    to_json,
)
from catalog.datasets import AEF_INFO
from catalog.extension import CHANGE_EXTENSION, own_schemas
from catalog.files import file_facts, raster_facts, sha256_multihash
from catalog.layout import collection_id, item_dir
from generator.errors import OutputError
from generator.methods import METHODS
from generator.quicklook import RESCALE, titiler_colormap
from generator.sources.base import AEF_DATASET, SourceInfo
from generator.urls import public_href
from tests.catalog_helpers import make_product, read_cog, with_fingerprint

COLLECTION = collection_id(AEF_DATASET)


def facts(product) -> ProductFacts:
    return ProductFacts(
        cog=file_facts(product.cog_path),
        thumbnail=file_facts(product.thumbnail_path),
        raster=raster_facts(product.cog_path),
    )


@pytest.fixture
def product(tmp_path: Path):
    return make_product(tmp_path)


@pytest.fixture
def other_product(tmp_path: Path):
    """Another region and year pair, further west and later."""
    return make_product(
        tmp_path,
        region_id="forest",
        years=(2020, 2025),
        method="angle",
        bounds=(13.2, 52.4, 13.21, 52.51),
        seed=3,
    )


def test_collection_id_is_path_safe() -> None:
    assert collection_id(AEF_DATASET) == "google-satellite-embedding-v1-annual"
    assert collection_id("projects/x/Some Dataset v2") == "projects-x-some-dataset-v2"
    with pytest.raises(OutputError, match="empty collection id"):
        collection_id("///")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "UPPER", "a..b"])
def test_item_dir_refuses_unsafe_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(OutputError, match="not usable as a folder name"):
        item_dir(tmp_path, "coll", bad)
    with pytest.raises(OutputError, match="not usable as a folder name"):
        item_dir(tmp_path, bad, "item")


def test_item_dir_standard_layout(tmp_path: Path) -> None:
    assert item_dir(tmp_path, "coll", "berlin_2017_2024_cosine") == tmp_path.resolve() / "coll" / (
        "berlin_2017_2024_cosine"
    )


def test_item_records_job_dates_and_change_fields(product) -> None:
    item = to_json(build_item(product, facts(product), COLLECTION))
    p = item["properties"]
    assert item["id"] == product.job.item_id == "town_2017_2024_cosine"
    assert item["collection"] == COLLECTION
    assert item["bbox"] == pytest.approx([13.40, 52.50, 13.41, 52.505])
    assert item["geometry"]["type"] == "Polygon"
    assert (p["start_datetime"], p["end_datetime"], p["datetime"]) == (
        "2017-01-01T00:00:00Z",
        "2024-12-31T23:59:59Z",
        "2024-12-31T23:59:59Z",
    )
    assert (p["change:region"], p["change:from_year"], p["change:to_year"]) == ("town", 2017, 2024)
    assert p["change:method"] == "cosine" and p["change:dataset"] == AEF_DATASET
    assert p["change:fingerprint"] == product.fingerprint
    assert p["change:percentiles"] == product.stats.percentiles
    assert [a["threshold"] for a in p["change:changed_area"]] == [0.1, 0.2, 0.3, 0.5]
    assert p["processing:software"] == {"changecat": "0.1.0"}
    assert p["processing:expression"] == {"format": "text/plain", "expression": METHODS["cosine"].expression}
    assert p["processing:datetime"] == "2026-11-25T12:00:00Z"
    assert p["sci:doi"] == "10.48550/arXiv.2507.22291" and "Brown" in p["sci:citation"]
    assert CHANGE_EXTENSION in item["stac_extensions"]


def test_change_asset_describes_the_cog(product) -> None:
    asset = to_json(build_item(product, facts(product), COLLECTION))["assets"][CHANGE_ASSET]
    values = read_cog(product.cog_path)
    assert asset["href"] == "./change.tif"
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert asset["roles"] == ["data"]
    assert (asset["data_type"], asset["nodata"]) == ("float32", "nan")
    assert asset["statistics"]["count"] == int((values == values).sum())  # non-NaN pixels
    assert asset["statistics"]["mean"] == pytest.approx(float(values[values == values].mean()), rel=1e-6)
    assert asset["proj:code"] == "EPSG:32633"
    assert asset["proj:shape"] == list(values.shape)
    assert CRS.from_string(asset["proj:code"]).to_epsg() == 32633
    assert asset["proj:transform"][0] == 10.0 and asset["proj:transform"][4] == -10.0
    assert asset["raster:spatial_resolution"] == 10.0
    assert asset["raster:histogram"]["count"] == len(product.stats.histogram.buckets)
    assert asset["file:size"] == product.cog_path.stat().st_size
    assert asset["file:checksum"] == sha256_multihash(product.cog_path)
    assert asset["file:checksum"].startswith("1220") and len(asset["file:checksum"]) == 68


def test_item_links_are_relative_and_carry_no_credentials(product) -> None:
    item = to_json(build_item(product, facts(product), COLLECTION))
    rels = {link["rel"]: link["href"] for link in item["links"] if link["rel"] != "derived_from"}
    assert rels == {
        "root": "../../catalog.json",
        "parent": "../collection.json",
        "collection": "../collection.json",
    }
    derived = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert derived == ["https://mirror.example.org/aef/aef_index.parquet", AEF_INFO.page]
    text = json.dumps(item)
    for secret in ("secret", "reader", "token", "Signature", "deadbeef", "#frag"):
        assert secret not in text


def test_clean_href() -> None:
    assert public_href("s3://user:pw@bucket:9000/a/b.tif?x=1#y") == "s3://bucket:9000/a/b.tif"
    assert public_href("/local/folder") == "/local/folder"


def test_a_local_mirror_is_not_named_in_the_catalog(tmp_path: Path) -> None:
    local = SourceInfo("aef", AEF_DATASET, "/home/someone/private/aef", derived_from=[])
    product = make_product(tmp_path, source=local)
    item = to_json(build_item(product, facts(product), COLLECTION))
    assert "/home/someone" not in json.dumps(item)
    assert "read from the aef source a local folder" in item["properties"]["processing:lineage"]


def test_item_without_fingerprint_is_refused(product) -> None:
    with pytest.raises(OutputError, match="no fingerprint"):
        build_item(with_fingerprint(product, ""), facts(product), COLLECTION)


def test_item_with_nan_statistic_is_refused(product) -> None:
    broken = replace(product, stats=replace(product.stats, mean=float("nan")))
    with pytest.raises(OutputError, match="mean is nan"):
        build_item(broken, facts(product), COLLECTION)


def test_collection_extent_and_summaries_cover_all_items(product, other_product) -> None:
    items = [build_item(p, facts(p), COLLECTION) for p in (product, other_product)]
    coll = to_json(build_collection(COLLECTION, items))
    assert coll["extent"]["spatial"]["bbox"] == [pytest.approx([13.2, 52.4, 13.41, 52.51])]
    assert coll["extent"]["temporal"]["interval"] == [["2017-01-01T00:00:00Z", "2025-12-31T23:59:59Z"]]
    s = coll["summaries"]
    assert s["change:region"] == ["forest", "town"]
    assert (s["change:from_year"], s["change:to_year"]) == ([2017, 2020], [2024, 2025])
    assert s["change:method"] == ["angle", "cosine"]
    assert set(coll["item_assets"]) == {"change", "thumbnail"}
    assert coll["license"] == "CC-BY-4.0"
    producer, processor = coll["providers"]
    assert producer["roles"] == ["licensor", "producer"]
    assert producer["description"] == (
        "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind."
    )
    assert processor["name"] == "changecat" and processor["roles"] == ["processor"]
    item_links = [link["href"] for link in coll["links"] if link["rel"] == "item"]
    assert item_links == [
        "./forest_2020_2025_angle/forest_2020_2025_angle.json",
        "./town_2017_2024_cosine/town_2017_2024_cosine.json",
    ]


def test_collection_needs_items() -> None:
    with pytest.raises(OutputError, match="without items"):
        build_collection(COLLECTION, [])


def test_catalog_links_children() -> None:
    cat = to_json(build_catalog("cat", "Title", "Desc", ["b", "a", "b"]))
    assert [(link["rel"], link["href"]) for link in cat["links"]] == [
        ("root", "./catalog.json"),
        ("child", "./a/collection.json"),
        ("child", "./b/collection.json"),
    ]


def test_render_shows_the_quicklook_palette(product) -> None:
    render = to_json(build_item(product, facts(product), COLLECTION))["properties"]["renders"]["change"]
    assert render["rescale"] == [list(RESCALE)] == [[0.0, 0.5]]
    assert render["assets"] == ["change"]
    assert render["colormap"] == titiler_colormap()
    assert render["colormap"]["0"] == [0, 0, 0, 255] and render["colormap"]["255"] == [255, 0, 0, 255]


def test_change_schema_is_draft07_with_our_id_and_methods() -> None:
    schema = json.loads(own_schemas()[CHANGE_EXTENSION].read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$id"] == CHANGE_EXTENSION
    regions_id = json.loads(
        (own_schemas()[CHANGE_EXTENSION].parents[2] / "regions/v1.0.0/schema.json").read_text()
    )
    assert regions_id["$id"].replace("regions", "change") == CHANGE_EXTENSION
    assert schema["definitions"]["fields"]["properties"]["change:method"]["enum"] == list(METHODS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("change:from_year", "2017"),
        ("change:to_year", 1800),
        ("change:method", "difference"),
        ("change:percentiles", {"median": 0.1}),
        ("change:changed_area", [{"threshold": 0.2, "area_km2": -1, "fraction": 0.1}]),
        ("change:fingerprint", "not-hex"),
        ("change:unknown", 1),
    ],
)
def test_change_schema_rejects_bad_fields(product, field: str, value: object) -> None:
    schema = json.loads(own_schemas()[CHANGE_EXTENSION].read_text())
    item = to_json(build_item(product, facts(product), COLLECTION))
    jsonschema.Draft7Validator(schema).validate(item)
    item["properties"][field] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(item)


def test_change_schema_requires_every_field_on_items(product) -> None:
    schema = json.loads(own_schemas()[CHANGE_EXTENSION].read_text())
    item = to_json(build_item(product, facts(product), COLLECTION))
    del item["properties"]["change:fingerprint"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(item)
