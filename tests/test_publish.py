"""changecat publish: the demo catalog to a real S3-protocol server (moto on 127.0.0.1), then read back over
HTTP the way users read it: pystac from the absolute root, every asset with its content type and checksum,
odc-stac, the stac-geoparquet search (also with DuckDB), stac-check."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import odc.stac
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
from click.testing import CliRunner

from catalog.extension import CHANGE_EXTENSION
from catalog.geoparquet import ITEMS_FILE
from catalog.publish import ORDER, SCHEMA_KEY, Upload, publish
from catalog.search import Query, search
from catalog.store import save_catalog
from catalog.validate import LocalSchemaValidator
from catalog.walk import iter_all_items
from changecat.cli import cli
from generator.errors import PublishError
from tests.catalog_helpers import make_product
from tests.publish_helpers import http_get, multihash, stac_check, start_s3, use_s3, walk_urls

BUCKET = "published-catalogs"


@pytest.fixture(scope="module")
def demo(demo_catalog: Path) -> Path:
    return demo_catalog


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    yield from start_s3()


@pytest.fixture(scope="module")
def published(demo: Path, s3_endpoint: str) -> Iterator[dict]:
    """The demo published once to s3://BUCKET/demo/ (a foreign object put there first), with what happened."""
    mp = pytest.MonkeyPatch()
    s3 = use_s3(mp, s3_endpoint, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="demo/notes/readme.txt", Body=b"not ours")
    base = f"{s3_endpoint}/{BUCKET}/demo/"
    events: list[tuple[Upload, bool]] = []
    first = publish(demo, f"s3://{BUCKET}/demo", base, on_upload=lambda u, s: events.append((u, s)))
    again = publish(demo, f"s3://{BUCKET}/demo", base)
    yield {"base": base, "first": first, "again": again, "events": events, "s3": s3}
    mp.undo()


def local_items(catalog: Path) -> dict[str, dict]:
    return {item["id"]: item for _, item in iter_all_items(catalog)}


def test_publish_uploads_everything_in_order_then_nothing(published: dict, demo: Path) -> None:
    files = {  # not changecat's lock files (.changecat.lock, .changecat.runs), which are not the catalog's
        p.relative_to(demo).as_posix()
        for p in demo.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(demo).parts)
    }
    keys = set(published["first"].uploaded)
    assert keys == files | {SCHEMA_KEY}  # every file of the catalog, plus our extension's schema
    assert published["first"].skipped == []
    kinds = [ORDER.index(u.kind) for u, _ in published["events"]]
    assert kinds == sorted(kinds) and published["events"][-1][0].key == "catalog.json"
    assert published["again"].uploaded == [] and set(published["again"].skipped) == keys
    body = published["s3"].get_object(Bucket=BUCKET, Key="demo/notes/readme.txt")["Body"].read()
    assert body == b"not ours"  # publish never deletes what it did not write


def test_pystac_walks_the_published_catalog_from_its_absolute_root(
    published: dict, demo: Path, stac_schemas: Path
) -> None:
    root_url = published["base"] + "catalog.json"
    root = json.loads(http_get(root_url)[0])
    assert root["links"][0] == {"rel": "self", "href": root_url, "type": "application/json"}
    schema_url = published["base"] + SCHEMA_KEY
    schema = json.loads(http_get(schema_url)[0])
    assert schema["$id"] == schema_url
    validator = LocalSchemaValidator(stac_schemas)
    validator.schema_cache[schema_url] = schema  # fetched over HTTP from where the items point
    cat = pystac.Catalog.from_file(root_url)
    items = list(cat.get_items(recursive=True))
    assert sorted(i.id for i in items) == sorted(local_items(demo))
    for obj in [cat, *cat.get_children(), *items]:
        data = obj.to_dict(include_self_link=False, transform_hrefs=False)
        assert CHANGE_EXTENSION not in data.get("stac_extensions", [])
        assert pystac.validation.validate_dict(data, validator=validator)
    assert items[0].get_self_href().startswith(published["base"])


def test_every_asset_answers_with_its_type_and_checksum(published: dict) -> None:
    cat = pystac.Catalog.from_file(published["base"] + "catalog.json")
    checked = 0
    for item in cat.get_items(recursive=True):
        for key, asset in item.assets.items():
            body, headers = http_get(asset.get_absolute_href())
            assert headers["content-type"] == asset.media_type, key
            assert headers["cache-control"].startswith("public, max-age=")
            assert multihash(body) == asset.extra_fields["file:checksum"], key
            checked += 1
    # change, thumbnail, overview, hotspots and the two years' embedding pictures of the 12 demo products
    assert checked == 12 * 6
    _, headers = http_get(published["base"] + "catalog.json")
    assert headers["content-type"] == "application/json"


def test_odc_stac_loads_products_apart_with_groupby_id(published: dict, demo: Path) -> None:
    cat = pystac.Catalog.from_file(published["base"] + "catalog.json")
    items = [i for i in cat.get_items(recursive=True) if i.id.startswith("forest_2017_2024_")]
    assert len(items) == 2  # cosine and angle, same years: same datetime
    fused = odc.stac.load(items, bands=["change"], chunks={})
    assert fused.sizes["time"] == 1  # what the default groupby="time" does: why the README says groupby="id"
    ds = odc.stac.load(items, bands=["change"], groupby="id")
    assert ds.sizes["time"] == 2
    for i, item in enumerate(sorted(items, key=lambda i: i.id)):
        local = demo / "google-satellite-embedding-v1-annual" / item.id / "change.tif"
        with rasterio.open(local) as src:
            expected = src.read(1)
        np.testing.assert_array_equal(ds["change"].isel(time=i).values, expected)


def test_published_items_file_answers_searches(published: dict, demo: Path) -> None:
    items = local_items(demo)
    query = Query(years=(2020, 2024), methods=("cosine",), regions=("forest", "airfield"))
    found = search(published["base"], query)
    expected = sorted(
        i
        for i, it in items.items()
        if it["properties"]["change:from_year"] == 2020
        and it["properties"]["change:method"] == "cosine"
        and it["properties"]["change:region"] in ("forest", "airfield")
    )
    assert [f["id"] for f in found] == expected == ["airfield_2020_2024_cosine", "forest_2020_2024_cosine"]
    for f in found:
        url = f["assets"]["change"]["href"]
        assert url == f"{published['base']}google-satellite-embedding-v1-annual/{f['id']}/change.tif"
        assert multihash(http_get(url)[0]) == f["assets"]["change"]["file:checksum"]
    # bbox of the forest region only (west of the airfield)
    west = search(published["base"] + "catalog.json", Query(bbox=(11.95, 52.38, 11.96, 52.385)))
    assert {f["properties"]["change:region"] for f in west} == {"forest", "demo-town"}
    # the same file with DuckDB and pyarrow
    data, headers = http_get(f"{published['base']}google-satellite-embedding-v1-annual/{ITEMS_FILE}")
    assert headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == len(items)
    con = duckdb.connect()
    con.register("items", table)
    rows = con.execute(
        """SELECT id FROM items WHERE "change:from_year" = 2020 AND "change:to_year" = 2024
           AND "change:method" = 'cosine' AND "change:region" IN ('forest', 'airfield') ORDER BY id"""
    ).fetchall()
    assert [r[0] for r in rows] == expected


def test_stac_check_finds_nothing_on_the_published_catalog(published: dict, stac_schemas: Path) -> None:
    urls = walk_urls(published["base"] + "catalog.json")
    assert len(urls) == 1 + 1 + 12
    for url in urls:
        valid, error, warnings = stac_check(url, stac_schemas)
        assert valid, (url, error)
        assert all("links" in w and "You have" in w for w in warnings), (
            url,
            warnings,
        )  # "too many links" only


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    products = [
        make_product(root, region_id="town", years=(2017, 2024), method="cosine"),
        make_product(root, region_id="lake", years=(2020, 2024), method="angle", seed=2),
    ]
    save_catalog(root, catalog_id="t", title="T", description="D", products=products)
    return root


def test_changed_product_uploads_just_it_and_the_json_above(
    small_catalog: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_s3(monkeypatch, s3_endpoint, "changes")
    base = f"{s3_endpoint}/changes/cat/"
    first = publish(small_catalog, "s3://changes/cat", base)
    assert first.uploaded and not first.skipped
    coll = "google-satellite-embedding-v1-annual"
    before = (small_catalog / coll / "collection.json").read_bytes()
    remade = make_product(small_catalog, region_id="town", years=(2017, 2024), method="cosine", seed=7)
    save_catalog(small_catalog, catalog_id="t", title="T", description="D", products=[remade])
    second = publish(small_catalog, "s3://changes/cat", base)
    item = f"{coll}/town_2017_2024_cosine"
    expected = {f"{item}/change.tif", f"{item}/thumbnail.png", f"{item}/town_2017_2024_cosine.json"}
    expected.add(f"{coll}/{ITEMS_FILE}")
    if (small_catalog / coll / "collection.json").read_bytes() != before:
        expected.add(f"{coll}/collection.json")
    assert set(second.uploaded) == expected
    assert "catalog.json" not in second.uploaded and not any("lake" in k for k in second.uploaded)


def test_dry_run_writes_nothing(small_catalog: Path, tmp_path: Path) -> None:
    dest = tmp_path / "site"
    result = publish(small_catalog, str(dest), "https://example.org/cat", dry_run=True)
    assert "catalog.json" in result.uploaded and not dest.exists()


def test_publish_to_a_folder_follows_the_umask_and_skips_unchanged(
    small_catalog: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "site"
    result = publish(small_catalog, str(dest), "https://example.org/cat/")
    root = json.loads((dest / "catalog.json").read_text())
    assert root["links"][0]["href"] == "https://example.org/cat/catalog.json"
    assert (dest / "catalog.json").stat().st_mode & 0o777 == 0o644  # pytest runs with umask 022
    assert (dest / SCHEMA_KEY).is_file() and len(result.uploaded) == len(
        [p for p in dest.rglob("*") if p.is_file()]
    )
    assert publish(small_catalog, str(dest), "https://example.org/cat/").uploaded == []
    shutil.rmtree(dest / "google-satellite-embedding-v1-annual" / "town_2017_2024_cosine")
    again = publish(small_catalog, str(dest), "https://example.org/cat/")
    item = "google-satellite-embedding-v1-annual/town_2017_2024_cosine/"
    assert set(again.uploaded) == {
        item + n for n in ("change.tif", "thumbnail.png", "town_2017_2024_cosine.json")
    }


@pytest.mark.parametrize(
    ("dest", "base", "message"),
    [
        ("ftp://host/x", "https://example.org/", "expected s3://bucket/prefix"),
        ("s3://b/x", "s3://b/x", "expected the http(s) URL"),
        ("s3://b/x", "https://user:pw@example.org/", "no user:password"),
    ],
)
def test_bad_destination_or_base_url(small_catalog: Path, dest: str, base: str, message: str) -> None:
    with pytest.raises(PublishError, match=re.escape(message)):
        publish(small_catalog, dest, base, dry_run=True)


def test_publish_refuses_to_write_into_the_catalog_itself(small_catalog: Path) -> None:
    before = (small_catalog / "catalog.json").read_bytes()
    for dest in (small_catalog, small_catalog / "site"):
        with pytest.raises(PublishError, match="outside the catalog"):
            publish(small_catalog, str(dest), "https://example.org/")
    assert (small_catalog / "catalog.json").read_bytes() == before


def test_publish_cli_dry_run_lists_uploads(small_catalog: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["publish", str(small_catalog), str(tmp_path / "site"), "--base-url", "https://e.org/", "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert "would upload catalog.json (application/json)" in result.output
    assert not (tmp_path / "site").exists()
