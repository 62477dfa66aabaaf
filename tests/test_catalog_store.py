"""catalog.store / summary: saving incrementally and atomically, and reading the catalog back with the tools
users have (pystac-client, odc-stac)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pystac
import pytest

from catalog.build import build_item, to_json
from catalog.files import write_json_atomic
from catalog.layout import collection_id
from catalog.store import CatalogStore, load_fingerprints, product_facts, save_catalog
from catalog.summary import summarize
from catalog.validate import validate_catalog
from generator.errors import ForeignCatalogError, OutputError
from generator.sources.base import SourceInfo
from tests.catalog_helpers import make_product, read_cog

COLLECTION = collection_id("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL")


def save(root: Path, products: list, catalog_id: str = "test-cat") -> None:
    save_catalog(root, catalog_id=catalog_id, title="Test", description="A test catalog.", products=products)


def item_ids(root: Path) -> list[str]:
    coll = json.loads((root / COLLECTION / "collection.json").read_text())
    return sorted(Path(link["href"]).stem for link in coll["links"] if link["rel"] == "item")


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def catalog_root(tmp_path: Path) -> Path:
    return tmp_path / "catalog"


@pytest.fixture
def two_products(catalog_root: Path) -> list:
    return [
        make_product(catalog_root),
        make_product(catalog_root, region_id="forest", years=(2020, 2024), method="angle", seed=1),
    ]


@pytest.fixture
def saved(catalog_root: Path, two_products: list) -> Path:
    """A catalog holding the two products."""
    save(catalog_root, two_products)
    return catalog_root


def test_save_writes_a_valid_catalog(saved: Path, two_products: list, stac_schemas: Path) -> None:
    assert validate_catalog(saved, stac_schemas) == []
    assert json.loads((saved / "catalog.json").read_text())["id"] == "test-cat"
    for p in two_products:
        assert (saved / COLLECTION / p.job.item_id / f"{p.job.item_id}.json").is_file()
    assert item_ids(saved) == ["forest_2020_2024_angle", "town_2017_2024_cosine"]
    assert temp_files(saved) == []


def test_load_fingerprints_reads_back_what_was_saved(saved: Path, two_products: list) -> None:
    assert load_fingerprints(saved) == {p.job.item_id: p.fingerprint for p in two_products}


def test_load_fingerprints_without_catalog_is_empty(tmp_path: Path) -> None:
    assert load_fingerprints(tmp_path / "nothing-here") == {}


def test_update_keeps_other_items_and_replaces_same_id(saved: Path, stac_schemas: Path) -> None:
    newer = make_product(saved, seed=7)  # same id as town_2017_2024_cosine, new content and fingerprint
    added = make_product(
        saved, region_id="lake", years=(2018, 2025), bounds=(13.5, 52.3, 13.51, 52.306), seed=2
    )
    save(saved, [newer])
    save(saved, [added])
    assert validate_catalog(saved, stac_schemas) == []
    assert item_ids(saved) == ["forest_2020_2024_angle", "lake_2018_2025_cosine", "town_2017_2024_cosine"]
    fingerprints = load_fingerprints(saved)
    assert fingerprints["town_2017_2024_cosine"] == newer.fingerprint
    item = json.loads(
        (saved / COLLECTION / "town_2017_2024_cosine" / "town_2017_2024_cosine.json").read_text()
    )
    assert item["assets"]["change"]["statistics"]["mean"] == pytest.approx(newer.stats.mean)
    coll = json.loads((saved / COLLECTION / "collection.json").read_text())
    assert coll["summaries"]["change:region"] == ["forest", "lake", "town"]
    assert coll["extent"]["temporal"]["interval"] == [["2017-01-01T00:00:00Z", "2025-12-31T23:59:59Z"]]
    assert coll["extent"]["spatial"]["bbox"][0][2] == pytest.approx(13.51)


def test_second_dataset_gets_its_own_collection(saved: Path, stac_schemas: Path) -> None:
    other = SourceInfo(kind="aef", dataset="EXAMPLE/OTHER_EMBEDDING", location="/data/other")
    save(saved, [make_product(saved, region_id="x", source=other)])
    assert validate_catalog(saved, stac_schemas) == []
    cat = json.loads((saved / "catalog.json").read_text())
    assert sorted(link["href"] for link in cat["links"] if link["rel"] == "child") == [
        "./example-other-embedding/collection.json",
        f"./{COLLECTION}/collection.json",
    ]
    coll = json.loads((saved / "example-other-embedding" / "collection.json").read_text())
    assert coll["license"] == "other" and "sci:doi" not in coll


def test_failed_save_leaves_the_catalog_valid(saved: Path, stac_schemas: Path) -> None:
    """A product whose files are not in its item folder fails after an earlier product's item was written:
    the collection and catalog were not rewritten, so they link to nothing missing."""
    before = load_fingerprints(saved)
    good = make_product(saved, region_id="lake", seed=2)
    misplaced = make_product(saved, region_id="field", seed=3)
    stray = saved.parent / "elsewhere.tif"
    misplaced.cog_path.rename(stray)
    with pytest.raises(OutputError, match="must be written in the item folder"):
        save(saved, [good, replace(misplaced, cog_path=stray)])
    assert validate_catalog(saved, stac_schemas) == []
    assert load_fingerprints(saved) == before  # the orphan item is not part of the catalog
    assert temp_files(saved) == []
    save(saved, [good])  # the next run makes it again
    assert "lake_2017_2024_cosine" in load_fingerprints(saved)


def test_missing_thumbnail_fails_before_writing(saved: Path, stac_schemas: Path) -> None:
    product = make_product(saved, region_id="lake", seed=2)
    product.thumbnail_path.unlink()
    with pytest.raises(OutputError, match="cannot read the product file"):
        save(saved, [product])
    assert not (saved / COLLECTION / "lake_2017_2024_cosine" / "lake_2017_2024_cosine.json").exists()
    assert validate_catalog(saved, stac_schemas) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "collection.json"
    write_json_atomic(path, {"id": "old"})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"id": "new", "bad": math.nan})  # NaN is not JSON: fails mid-write
    assert json.loads(path.read_text()) == {"id": "old"}
    assert list(tmp_path.iterdir()) == [path]


def test_summarize(saved: Path, two_products: list) -> None:
    rows = summarize(saved)
    assert [r["item_id"] for r in rows] == ["forest_2020_2024_angle", "town_2017_2024_cosine"]
    forest, town = rows
    p = two_products[0]
    at_02 = next(a for a in p.stats.changed_area if a.threshold == 0.2)
    assert town == {
        "item_id": "town_2017_2024_cosine",
        "region": "town",
        "from_year": 2017,
        "to_year": 2024,
        "method": "cosine",
        "mean": pytest.approx(p.stats.mean),
        "changed_km2": pytest.approx(at_02.area_km2),
        "changed_fraction": pytest.approx(at_02.fraction),
    }
    assert forest["method"] == "angle" and forest["from_year"] == 2020


def test_pystac_client_walks_the_catalog(saved: Path) -> None:
    from pystac_client import Client

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a static catalog has no conformance classes: fallback warnings
        client = Client.open(str(saved / "catalog.json"))
        collections = list(client.get_collections())
        items = sorted(client.get_items(), key=lambda i: i.id)
    assert [c.id for c in collections] == [COLLECTION]
    assert [i.id for i in items] == ["forest_2020_2024_angle", "town_2017_2024_cosine"]
    assert items[1].assets["change"].get_absolute_href() == str(
        saved / COLLECTION / items[1].id / "change.tif"
    )


def test_odc_stac_loads_the_change_asset(saved: Path, two_products: list) -> None:
    import odc.stac

    product = two_products[0]
    item = pystac.Item.from_file(
        str(saved / COLLECTION / product.job.item_id / f"{product.job.item_id}.json")
    )
    ds = odc.stac.load([item], bands=["change"])
    loaded = ds["change"].isel(time=0).values
    expected = read_cog(product.cog_path)
    assert loaded.dtype == np.float32
    assert loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded, expected)  # NaN positions equal too
    assert ds.odc.crs.epsg == 32633


def test_a_store_adding_one_by_one_gives_the_whole_catalog(
    catalog_root: Path, two_products, stac_schemas: Path
) -> None:
    store = CatalogStore(catalog_root, catalog_id="cat", title="Test", description="A test catalog.")
    for product in two_products:
        store.add([product])
    assert load_fingerprints(catalog_root) == {p.job.item_id: p.fingerprint for p in two_products}
    assert validate_catalog(catalog_root, stac_schemas) == []


def test_two_stores_writing_one_catalog_lose_nothing(catalog_root: Path, stac_schemas: Path) -> None:
    """Two runs at once: each merges with what is on disk when it writes, not with what it read first."""
    first = CatalogStore(catalog_root, catalog_id="cat", title="Test", description="A test catalog.")
    second = CatalogStore(catalog_root, catalog_id="cat", title="Test", description="A test catalog.")
    first.add([make_product(catalog_root, region_id="a", seed=1)])
    second.add([make_product(catalog_root, region_id="b", seed=2)])
    first.add([make_product(catalog_root, region_id="c", seed=3)])
    second.add([make_product(catalog_root, region_id="d", seed=4)])
    assert item_ids(catalog_root) == [f"{r}_2017_2024_cosine" for r in "abcd"]
    assert validate_catalog(catalog_root, stac_schemas) == []


def test_hand_edits_to_the_root_catalog_are_kept(saved: Path, stac_schemas: Path) -> None:
    path = saved / "catalog.json"
    root = json.loads(path.read_text())
    root["links"].append({"rel": "about", "href": "https://example.org/about", "type": "text/html"})
    root["keywords"] = ["kept"]
    path.write_text(json.dumps(root))
    save(saved, [make_product(saved, region_id="lake", seed=2)])
    after = json.loads(path.read_text())
    assert {"rel": "about", "href": "https://example.org/about", "type": "text/html"} in after["links"]
    assert after["keywords"] == ["kept"]
    assert validate_catalog(saved, stac_schemas) == []


def foreign_catalog(root: Path) -> bytes:
    """A catalog another tool wrote: a sub-catalog of its own and a link to its home."""
    other = pystac.Catalog(id="other", description="Another tool's sub-catalog.")
    other.remove_links("root")
    other.add_link(pystac.Link("root", "../catalog.json", media_type="application/json"))
    other.add_link(pystac.Link("parent", "../catalog.json", media_type="application/json"))
    write_json_atomic(
        root / "other" / "catalog.json", other.to_dict(include_self_link=False, transform_hrefs=False)
    )
    cat = pystac.Catalog(id="foreign", description="Written by another tool.")
    cat.remove_links("root")
    cat.add_link(pystac.Link("root", "./catalog.json", media_type="application/json"))
    cat.add_link(pystac.Link("child", "./other/catalog.json", media_type="application/json"))
    cat.add_link(pystac.Link("about", "https://example.org/", media_type="text/html"))
    write_json_atomic(root / "catalog.json", cat.to_dict(include_self_link=False, transform_hrefs=False))
    return (root / "catalog.json").read_bytes()


def test_a_foreign_catalog_is_refused_untouched_unless_adopted(
    catalog_root: Path, stac_schemas: Path
) -> None:
    before = foreign_catalog(catalog_root)
    product = make_product(catalog_root)
    with pytest.raises(ForeignCatalogError, match=r"changecat did not write.*--adopt"):
        save(catalog_root, [product])
    assert (catalog_root / "catalog.json").read_bytes() == before
    assert not (catalog_root / COLLECTION / "collection.json").exists()
    adopting = CatalogStore(catalog_root, catalog_id="mine", title="T", description="D.", adopt=True)
    adopting.add([product])
    root = json.loads((catalog_root / "catalog.json").read_text())
    hrefs = {(link["rel"], link["href"]) for link in root["links"]}
    assert {("child", "./other/catalog.json"), ("about", "https://example.org/")} <= hrefs
    assert ("child", f"./{COLLECTION}/collection.json") in hrefs
    assert validate_catalog(catalog_root, stac_schemas) == []
    save(catalog_root, [make_product(catalog_root, region_id="lake", seed=2)])  # ours from now on


def test_a_malformed_collection_is_rebuilt_from_its_item_folders(saved: Path, stac_schemas: Path) -> None:
    (saved / COLLECTION / "collection.json").write_text("{ not json")
    notes: list[str] = []
    store = CatalogStore(saved, catalog_id="test-cat", title="Test", description="A.", note=notes.append)
    store.add([make_product(saved, region_id="lake", seed=2)])
    assert item_ids(saved) == ["forest_2020_2024_angle", "lake_2017_2024_cosine", "town_2017_2024_cosine"]
    assert any("not valid JSON" in n and "rebuilding it from its item folders" in n for n in notes)
    assert not any("delete" in n for n in notes)
    assert validate_catalog(saved, stac_schemas) == []


def test_a_malformed_item_is_skipped_with_a_message(saved: Path) -> None:
    bad = saved / COLLECTION / "town_2017_2024_cosine" / "town_2017_2024_cosine.json"
    bad.write_text('{"type": "Feature"')
    notes: list[str] = []
    store = CatalogStore(saved, catalog_id="test-cat", title="Test", description="A.", note=notes.append)
    store.add([make_product(saved, region_id="lake", seed=2)])
    assert item_ids(saved) == ["forest_2020_2024_angle", "lake_2017_2024_cosine"]
    assert any(str(bad) in n and "remakes it" in n for n in notes)


def test_validate_reports_unlinked_item_folders_and_leftovers(saved: Path, stac_schemas: Path) -> None:
    orphan = make_product(saved, region_id="lake", seed=2)  # files and item written, never linked
    item = build_item(orphan, product_facts(orphan, orphan.cog_path.parent), COLLECTION)
    write_json_atomic(orphan.cog_path.parent / "lake_2017_2024_cosine.json", to_json(item))
    (saved / COLLECTION / ".staging-town_2017_2024_cosine-x1").mkdir()
    (saved / ".catalog.json.abc.tmp").write_text("{")
    problems = validate_catalog(saved, stac_schemas)
    assert len(problems) == 3, problems
    assert f"{COLLECTION}/lake_2017_2024_cosine: item folder that no collection links" in problems[0]
    assert any(".staging-town_2017_2024_cosine-x1: left over by an interrupted run" in p for p in problems)
    assert any(".catalog.json.abc.tmp: left over" in p for p in problems)


def test_an_unreadable_root_is_refused_then_rebuilt_from_its_collections_when_adopted(
    saved: Path, stac_schemas: Path
) -> None:
    other = SourceInfo(kind="aef", dataset="EXAMPLE/OTHER_EMBEDDING", location="/data/other")
    save(saved, [make_product(saved, region_id="x", source=other)])
    (saved / "catalog.json").write_text("{ truncated")
    with pytest.raises(ForeignCatalogError, match="cannot be read as a catalog") as raised:
        save(saved, [make_product(saved, region_id="lake", seed=2)])
    assert "delete" not in str(raised.value)
    adopting = CatalogStore(saved, catalog_id="test-cat", title="Test", description="A.", adopt=True)
    adopting.add([make_product(saved, region_id="lake", seed=2)])
    root = json.loads((saved / "catalog.json").read_text())
    assert sorted(link["href"] for link in root["links"] if link["rel"] == "child") == [
        "./example-other-embedding/collection.json",
        f"./{COLLECTION}/collection.json",
    ]
    assert validate_catalog(saved, stac_schemas) == []
