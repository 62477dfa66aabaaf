"""changecat search on a local catalog (the stac-geoparquet file kept in step by every run) and changecat
serve (byte ranges, CORS, the publication's self links), with stac-check on the served demo catalog."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import stac_geoparquet.arrow as sgp
from click.testing import CliRunner

from catalog.geoparquet import ITEMS_FILE
from catalog.search import Query, search
from catalog.serve import CatalogServer, browser_url
from catalog.store import save_catalog
from changecat.cli import cli
from generator.errors import SearchError
from tests.catalog_helpers import make_product
from tests.publish_helpers import http_get, multihash, stac_check, walk_urls

COLL = "google-satellite-embedding-v1-annual"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    products = [
        make_product(root, region_id="town", years=(2017, 2024), method="cosine"),
        make_product(root, region_id="town", years=(2017, 2024), method="angle", seed=1),
        make_product(
            root,
            region_id="lake",
            years=(2020, 2024),
            method="cosine",
            seed=2,
            bounds=(13.2, 52.4, 13.21, 52.41),
        ),
    ]
    save_catalog(root, catalog_id="t", title="T", description="D", products=products)
    return root


def ids(items: list[dict]) -> list[str]:
    return [i["id"] for i in items]


def test_items_file_is_kept_in_step_with_the_catalog(catalog: Path) -> None:
    table = pq.read_table(catalog / COLL / ITEMS_FILE)
    assert sorted(table["id"].to_pylist()) == [
        "lake_2020_2024_cosine",
        "town_2017_2024_angle",
        "town_2017_2024_cosine",
    ]
    coll = json.loads((catalog / COLL / "collection.json").read_text())
    assert coll["assets"]["geoparquet-items"]["roles"] == ["stac-items"]
    assert coll["assets"]["geoparquet-items"]["type"] == "application/vnd.apache.parquet"
    extra = make_product(catalog, region_id="river", years=(2017, 2024), method="cosine", seed=5)
    save_catalog(catalog, catalog_id="t", title="T", description="D", products=[extra])
    assert pq.read_table(catalog / COLL / ITEMS_FILE).num_rows == 4
    items = list(sgp.stac_table_to_items(pq.read_table(catalog / COLL / ITEMS_FILE)))
    river = next(i for i in items if i["id"] == "river_2017_2024_cosine")
    assert river["assets"]["change"]["href"] == "./river_2017_2024_cosine/change.tif"  # relative to the file
    links = {(lk["rel"], lk["href"]) for lk in river["links"]}
    assert ("self", "./river_2017_2024_cosine/river_2017_2024_cosine.json") in links
    assert ("root", "../catalog.json") in links


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), ["lake_2020_2024_cosine", "town_2017_2024_angle", "town_2017_2024_cosine"]),
        (Query(years=(2017, 2024)), ["town_2017_2024_angle", "town_2017_2024_cosine"]),
        (Query(methods=("cosine",)), ["lake_2020_2024_cosine", "town_2017_2024_cosine"]),
        (Query(regions=("lake",), methods=("angle",)), []),
        (Query(bbox=(13.19, 52.39, 13.205, 52.405)), ["lake_2020_2024_cosine"]),
        (Query(bbox=(0.0, 0.0, 1.0, 1.0)), []),
    ],
)
def test_search_a_local_catalog(catalog: Path, query: Query, expected: list[str]) -> None:
    found = search(str(catalog), query)
    assert ids(found) == expected
    for item in found:
        path = Path(item["assets"]["change"]["href"])
        assert (
            path.is_absolute() and multihash(path.read_bytes()) == item["assets"]["change"]["file:checksum"]
        )


def test_duckdb_reads_the_local_items_file(catalog: Path) -> None:
    rows = duckdb.sql(
        f"""SELECT id FROM read_parquet('{catalog / COLL / ITEMS_FILE}')
            WHERE "change:method" = 'angle' AND bbox.xmin <= 13.41"""
    ).fetchall()
    assert rows == [("town_2017_2024_angle",)]


def test_search_cli_prints_ids_and_asset_urls(catalog: Path) -> None:
    result = CliRunner().invoke(cli, ["search", str(catalog), "--years", "2017", "2024", "--method", "angle"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("town_"))
    item_id, href = line.split("\t")
    assert item_id == "town_2017_2024_angle" and href == str(catalog / COLL / item_id / "change.tif")


def test_search_without_items_file_says_so(catalog: Path) -> None:
    coll = catalog / COLL / "collection.json"
    data = json.loads(coll.read_text())
    del data["assets"]["geoparquet-items"]
    coll.write_text(json.dumps(data))
    with pytest.raises(SearchError, match="no collection has a stac-geoparquet asset"):
        search(str(catalog), Query())
    with pytest.raises(SearchError, match="cannot read it"):
        search(str(catalog / "nowhere"), Query())


@pytest.fixture
def served(catalog: Path) -> Iterator[CatalogServer]:
    server = CatalogServer(catalog, port=0)
    thread = server.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def request(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, b""


def test_serve_answers_ranges_with_cors(served: CatalogServer, catalog: Path) -> None:
    cog = catalog / COLL / "town_2017_2024_cosine" / "change.tif"
    url = served.base_url + f"{COLL}/town_2017_2024_cosine/change.tif"
    status, headers, body = request(url, Range="bytes=4-11")
    assert status == 206 and body == cog.read_bytes()[4:12]
    assert headers["content-range"] == f"bytes 4-11/{cog.stat().st_size}"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["content-type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    status, _, body = request(url, Range="bytes=-5")
    assert status == 206 and body == cog.read_bytes()[-5:]
    assert request(url, Range=f"bytes={cog.stat().st_size + 10}-")[0] == 416
    assert request(served.base_url + "nothing.json")[0] == 404
    root = json.loads(request(served.catalog_url)[2])
    assert root["links"][0] == {"rel": "self", "href": served.catalog_url, "type": "application/json"}
    assert browser_url(served.catalog_url).endswith("#/external/" + served.catalog_url)
    assert ids(search(served.base_url, Query(methods=("angle",)))) == ["town_2017_2024_angle"]


def test_serve_cli_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_stac_check_finds_nothing_on_the_served_demo(demo_catalog: Path, stac_schemas: Path) -> None:
    """The demo as `changecat serve` shows it (the on-disk catalog is self-contained: STAC's best practices
    keep absolute self links out of it, and stac-check asks for them on catalogs and collections)."""
    server = CatalogServer(demo_catalog, port=0)
    thread = server.start()
    try:
        urls = walk_urls(server.catalog_url)
        assert len(urls) == 14
        for url in urls:
            valid, error, warnings = stac_check(url, stac_schemas)
            assert valid, (url, error)
            assert all("You have" in w and "links" in w for w in warnings), (url, warnings)
        _, headers = http_get(server.catalog_url)
        assert headers["access-control-allow-origin"] == "*"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
