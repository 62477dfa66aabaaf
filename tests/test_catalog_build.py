"""catalog.build / layout / render: the STAC objects built from products, and the change extension schema."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from rasterio.crs import CRS

from catalog.assets import regroup
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
from catalog.files import file_facts, raster_facts, sha256_multihash, write_json_atomic
from catalog.layout import collection_id, item_dir
from generator.errors import OutputError
from generator.methods import METHODS
from generator.quicklook import COLORMAP_NAME, RESCALE
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
    assert p["change:percentiles"] == pytest.approx(product.stats.percentiles, rel=1e-6)
    assert [a["threshold"] for a in p["change:changed_area"]] == [0.1, 0.2, 0.3, 0.5]
    assert p["processing:software"] == {"changecat": "0.1.0"}
    assert p["processing:expression"] == {"format": "text/plain", "expression": METHODS["cosine"].expression}
    assert p["processing:datetime"] == "2026-11-25T12:00:00Z"
    assert "sci:doi" not in p and "sci:citation" not in p  # the paper's DOI is not our product's
    assert p["created"] == p["updated"] == "2026-11-25T12:00:00Z"
    assert CHANGE_EXTENSION in item["stac_extensions"]


def test_change_asset_describes_the_cog(product) -> None:
    asset = to_json(build_item(product, facts(product), COLLECTION))["assets"][CHANGE_ASSET]
    values = read_cog(product.cog_path)
    assert asset["href"] == "./change.tif"
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert asset["roles"] == ["data"]
    assert asset["description"] == (
        "Cosine distance between 2017 and 2024: 1 - sum(a_i * b_i, i=0..63). "
        "Values from 0 (no change) to 2; NaN where a year has no data or outside the region."
    )
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
    rels = {link["rel"]: link["href"] for link in item["links"] if link["rel"] != "via"}
    assert rels == {
        "root": "../../catalog.json",
        "parent": "../collection.json",
        "collection": "../collection.json",
    }
    assert all(link.get("title") for link in item["links"])
    via = [(link["href"], link["type"]) for link in item["links"] if link["rel"] == "via"]
    assert via == [
        ("https://mirror.example.org/aef/aef_index.parquet", "application/vnd.apache.parquet"),
        (AEF_INFO.page, "text/html"),
    ]
    assert not [link for link in item["links"] if link["rel"] == "derived_from"]  # no STAC object behind
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
    assert (
        "read from a local copy of the dataset's COG files (aef source)"
        in item["properties"]["processing:lineage"]
    )


def test_lineage_says_what_was_read_from_where(product) -> None:
    lineage = to_json(build_item(product, facts(product), COLLECTION))["properties"]["processing:lineage"]
    assert lineage.startswith(
        f"The {METHODS['cosine'].inputs} of 2017 and 2024 of {AEF_DATASET}, read from the dataset's COG "
        "files at https://mirror.example.org/aef (aef source)"
    )
    assert METHODS["cosine"].expression in lineage


def test_s2_difference_lineage_names_sentinel2_in_earth_engine(tmp_path: Path) -> None:
    s2 = SourceInfo("earthengine", METHODS["s2-difference"].dataset, "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL")
    product = make_product(tmp_path, method="s2-difference", source=s2)
    item = to_json(build_item(product, facts(product), collection_id(s2.dataset)))
    lineage = item["properties"]["processing:lineage"]
    assert "COPERNICUS/S2_SR_HARMONIZED image collection" in lineage and "Earth Engine" in lineage
    assert "SATELLITE_EMBEDDING" not in lineage and "embedding" not in lineage
    assert "sci:publications" not in to_json(
        build_collection(
            collection_id(s2.dataset), [build_item(product, facts(product), collection_id(s2.dataset))]
        )
    )  # no paper for Sentinel-2


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
    assert set(coll["item_assets"]) == {"change", "thumbnail", "overview"}
    assert coll["item_assets"]["overview"]["roles"] == ["overview"]
    # the latest product's thumbnail stands for the collection
    assert coll["assets"]["thumbnail"]["href"] == "./forest_2020_2025_angle/thumbnail.png"
    assert coll["assets"]["thumbnail"]["roles"] == ["thumbnail"]
    assert (coll["created"], coll["updated"]) == ("2026-11-25T12:00:00Z", "2026-11-25T12:00:00Z")
    assert "sci:doi" not in coll  # the paper's DOI is not our product's
    assert coll["sci:publications"] == [{"doi": "10.48550/arXiv.2507.22291", "citation": AEF_INFO.citation}]
    assert all(link.get("title") for link in coll["links"])
    assert {(link["rel"], link["type"]) for link in coll["links"] if link["href"] == AEF_INFO.page} == {
        ("via", "text/html")
    }
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
    assert [(link["rel"], link["href"], link["title"]) for link in cat["links"]] == [
        ("root", "./catalog.json", "Title"),
        ("child", "./a/collection.json", "a"),
        ("child", "./b/collection.json", "b"),
    ]
    titled = to_json(build_catalog("cat", "Title", "Desc", [COLLECTION]))
    assert titled["links"][1]["title"] == "Change maps from " + AEF_INFO.title


def test_render_shows_the_quicklook_palette(product) -> None:
    render = to_json(build_item(product, facts(product), COLLECTION))["properties"]["renders"]["change"]
    assert render["rescale"] == [list(RESCALE)] == [[0.0, 0.5]]
    assert render["assets"] == ["change"]
    assert render["colormap_name"] == COLORMAP_NAME == "inferno"  # known to titiler/rio-tiler by name
    assert "colormap" not in render


def test_item_is_compact(product) -> None:
    """A 256-entry colormap made items ~33 KB and STAC Browser pages 39,000 px tall. Written as the store
    writes it (indent 2), with a 256-bucket histogram of a 100-Mpx region (8-digit counts)."""
    hist = replace(product.stats.histogram, buckets=[12_345_678] * 256)
    big = replace(product, stats=replace(product.stats, histogram=hist))
    item = to_json(build_item(big, facts(big), COLLECTION))
    assert len(json.dumps(item, indent=2, ensure_ascii=False)) < 8_000
    assert item["assets"]["change"]["raster:histogram"]["buckets"] == [4 * 12_345_678] * 64
    assert item["assets"]["change"]["raster:histogram"]["count"] == 64


def test_regroup_keeps_counts_exact() -> None:
    assert regroup(list(range(256)))[:2] == [0 + 1 + 2 + 3, 4 + 5 + 6 + 7]
    assert sum(regroup(list(range(256)))) == sum(range(256))
    assert regroup([1, 2, 3]) == [1, 2, 3] and regroup(list(range(100))) == list(range(100))


def test_assets_have_roles_by_best_practice(product, tmp_path: Path) -> None:
    overview = tmp_path / "overview.png"
    overview.write_bytes(b"png")
    with_overview = replace(facts(product), overview=file_facts(overview))
    assets = to_json(build_item(product, with_overview, COLLECTION))["assets"]
    assert assets["thumbnail"]["roles"] == ["thumbnail"] and assets["thumbnail"]["href"] == "./thumbnail.png"
    assert assets["overview"]["roles"] == ["overview"] and assets["overview"]["href"] == "./overview.png"
    assert assets["overview"]["file:size"] == 3
    assert "overview" not in to_json(build_item(product, facts(product), COLLECTION))["assets"]


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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_catalog_json_modes_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """write_json_atomic went through mkstemp (0600): served by another user, catalog.json answered 404."""
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "catalog.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "catalog.json").stat().st_mode & 0o777 == 0o666 & ~umask
