"""catalog.validate: each kind of broken catalog gives a problem line naming the file and the fault."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio

from catalog.files import file_facts
from catalog.layout import collection_id
from catalog.store import save_catalog
from catalog.validate import validate_catalog
from generator.errors import OutputError
from tests.catalog_helpers import make_product
from tests.http_helpers import served

COLLECTION = collection_id("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL")
ITEM = "town_2017_2024_cosine"
ITEM_JSON = f"{COLLECTION}/{ITEM}/{ITEM}.json"


def edit_item(root: Path, change) -> None:
    path = root / ITEM_JSON
    item = json.loads(path.read_text())
    change(item)
    path.write_text(json.dumps(item))


@pytest.fixture
def valid(tmp_path: Path, stac_schemas: Path) -> Path:
    root = tmp_path / "catalog"
    products = [make_product(root), make_product(root, region_id="forest", seed=1)]
    save_catalog(root, catalog_id="cat", title="Cat", description="Catalog.", products=products)
    assert validate_catalog(root, stac_schemas) == []
    return root


@pytest.fixture
def tampered_thumbnail(valid: Path) -> Path:
    """The thumbnail's bytes changed after the catalog recorded its size and checksum."""
    with open(valid / COLLECTION / ITEM / "thumbnail.png", "ab") as f:
        f.write(b"extra")
    return valid


@pytest.fixture
def wrong_checksum(valid: Path) -> Path:
    """A well-formed sha2-256 multihash of other content."""
    edit_item(valid, lambda i: i["assets"]["change"].update({"file:checksum": "1220" + "ab" * 32}))
    return valid


@pytest.fixture
def other_hash_algorithm(valid: Path) -> Path:
    """A sha2-512 multihash (prefix 1340), which we cannot verify."""
    edit_item(valid, lambda i: i["assets"]["change"].update({"file:checksum": "1340" + "ab" * 64}))
    return valid


NON_COG_SIDE = 600
"""Larger than 512 px, so cog_validate requires tiles and overviews."""


@pytest.fixture
def striped_tiff(valid: Path) -> Path:
    """change.tif replaced by a plain striped GeoTIFF without overviews; size and checksum updated."""
    cog = valid / COLLECTION / ITEM / "change.tif"
    with rasterio.open(cog) as src:
        profile = src.profile
    profile.update(driver="GTiff", tiled=False, compress=None, width=NON_COG_SIDE, height=NON_COG_SIDE)
    for key in ("blockxsize", "blockysize", "interleave"):
        profile.pop(key, None)
    cog.unlink()
    with rasterio.open(cog, "w", **profile) as dst:
        dst.write(np.zeros((NON_COG_SIDE, NON_COG_SIDE), np.float32), 1)
    refresh_file_facts(valid, cog)
    return valid


def refresh_file_facts(catalog: Path, cog: Path) -> None:
    """Record the COG's new size and checksum in the item, so only the COG itself is wrong."""
    facts = file_facts(cog)
    edit_item(
        catalog,
        lambda i: i["assets"]["change"].update({"file:size": facts.size, "file:checksum": facts.checksum}),
    )


@pytest.fixture
def garbage_cog(valid: Path) -> Path:
    """change.tif holds bytes that are no raster at all; size and checksum updated."""
    cog = valid / COLLECTION / ITEM / "change.tif"
    cog.write_bytes(b"not a tiff")
    refresh_file_facts(valid, cog)
    return valid


@pytest.fixture
def missing_thumbnail(valid: Path) -> Path:
    (valid / COLLECTION / ITEM / "thumbnail.png").unlink()
    return valid


@pytest.fixture
def missing_item_json(valid: Path) -> Path:
    (valid / ITEM_JSON).unlink()
    return valid


@pytest.fixture
def year_as_string(valid: Path) -> Path:
    edit_item(valid, lambda i: i["properties"].update({"change:from_year": "2017"}))
    return valid


@pytest.fixture
def unknown_extension(valid: Path) -> Path:
    """Declares the eo extension, whose schema is not among the local copies."""
    edit_item(
        valid,
        lambda i: i["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json"),
    )
    return valid


@pytest.fixture
def bad_projection(valid: Path) -> Path:
    edit_item(valid, lambda i: i["assets"]["change"].update({"proj:shape": "58x70"}))
    return valid


@pytest.fixture
def core_violation(valid: Path) -> Path:
    """An item without geometry (core requires the key)."""
    edit_item(valid, lambda i: i.pop("geometry"))
    return valid


@pytest.fixture
def malformed_links_and_assets(valid: Path) -> Path:
    """A link that is a bare string and an asset that is a number: reported, never a crash."""
    edit_item(valid, lambda i: (i["links"].append("../collection.json"), i["assets"].update({"x": 1})))
    return valid


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_tampered_file_fails_size_and_checksum(tampered_thumbnail: Path, stac_schemas: Path) -> None:
    problems = validate_catalog(tampered_thumbnail, stac_schemas)
    assert len(problems) == 2, problems
    assert all(p.startswith(ITEM_JSON) and "'thumbnail'" in p for p in problems)
    assert any("file:size" in p for p in problems) and any(
        "file:checksum does not match" in p for p in problems
    )


def test_wrong_checksum(wrong_checksum: Path, stac_schemas: Path) -> None:
    assert "asset 'change' file:checksum does not match" in only(
        validate_catalog(wrong_checksum, stac_schemas)
    )


def test_unverifiable_checksum(other_hash_algorithm: Path, stac_schemas: Path) -> None:
    assert "not a sha2-256 multihash" in only(validate_catalog(other_hash_algorithm, stac_schemas))


def test_non_cog(striped_tiff: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(striped_tiff, stac_schemas))
    assert "change.tif is not a valid Cloud-Optimized GeoTIFF" in problem


def test_unreadable_cog(garbage_cog: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(garbage_cog, stac_schemas))
    assert "change.tif is not a valid Cloud-Optimized GeoTIFF: cannot open it as a raster" in problem


def test_missing_asset_file(missing_thumbnail: Path, stac_schemas: Path) -> None:
    item_problem, collection_problem = sorted(validate_catalog(missing_thumbnail, stac_schemas), reverse=True)
    assert "asset 'thumbnail' href ./thumbnail.png does not resolve to a file" in item_problem
    # the collection's thumbnail is that item's quicklook
    assert collection_problem.startswith(f"{COLLECTION}/collection.json: asset 'thumbnail'")


def test_missing_item_file(missing_item_json: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(missing_item_json, stac_schemas))
    assert problem.startswith(f"{COLLECTION}/collection.json: link rel=item")
    assert f"{ITEM}.json does not resolve to a file" in problem


def test_change_extension_violation(year_as_string: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(year_as_string, stac_schemas))
    assert "change/v1.0.0/schema.json" in problem
    assert "properties/change:from_year: '2017' is not of type 'integer'" in problem


def test_unknown_extension_offline(unknown_extension: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(unknown_extension, stac_schemas))
    assert "eo/v1.1.0/schema.json but its schema is missing from" in problem
    assert str(stac_schemas / "eo" / "v1.1.0" / "schema.json") in problem


def test_official_extension_violation(bad_projection: Path, stac_schemas: Path) -> None:
    problem = only(validate_catalog(bad_projection, stac_schemas))
    assert "projection/v2.0.0" in problem and "assets/change/proj:shape" in problem


def test_core_violation(core_violation: Path, stac_schemas: Path) -> None:
    problems = validate_catalog(core_violation, stac_schemas)
    assert any("STAC 1.1.0 core" in p and "geometry" in p for p in problems), problems


def test_no_catalog(tmp_path: Path, stac_schemas: Path) -> None:
    assert only(validate_catalog(tmp_path, stac_schemas)) == "catalog.json: missing"


def test_missing_schemas_folder(valid: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        validate_catalog(valid, tmp_path / "no-schemas")


def test_malformed_links_and_assets_are_problems(
    malformed_links_and_assets: Path, stac_schemas: Path
) -> None:
    problems = validate_catalog(malformed_links_and_assets, stac_schemas)
    assert problems and all(ITEM in p for p in problems)


@pytest.fixture
def no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def test_catalog_json_itself_is_accepted(valid: Path, stac_schemas: Path) -> None:
    assert validate_catalog(valid / "catalog.json", stac_schemas) == []
    assert validate_catalog(str(valid / "catalog.json"), stac_schemas) == []


@pytest.mark.parametrize("suffix", ["", "catalog.json"])
def test_valid_catalog_over_http(valid: Path, stac_schemas: Path, no_proxy_for_loopback, suffix: str) -> None:
    with served(valid.parent) as url:
        assert validate_catalog(f"{url}catalog/{suffix}", stac_schemas) == []


def test_problems_found_over_http(
    tampered_thumbnail: Path, stac_schemas: Path, no_proxy_for_loopback
) -> None:
    (tampered_thumbnail / COLLECTION / "forest_2017_2024_cosine" / "change.tif").write_bytes(b"not a tiff")
    with served(tampered_thumbnail.parent) as url:
        problems = validate_catalog(f"{url}catalog", stac_schemas)
    assert any(p.startswith(ITEM_JSON) and "'thumbnail' file:size" in p for p in problems), problems
    assert any(p.startswith(ITEM_JSON) and "'thumbnail' file:checksum does not match" in p for p in problems)
    forest = f"{COLLECTION}/forest_2017_2024_cosine/forest_2017_2024_cosine.json"
    assert any(
        p.startswith(forest) and "change.tif is not a valid Cloud-Optimized GeoTIFF" in p for p in problems
    )


def test_missing_item_over_http(missing_item_json: Path, stac_schemas: Path, no_proxy_for_loopback) -> None:
    with served(missing_item_json.parent) as url:
        problem = only(validate_catalog(f"{url}catalog/catalog.json", stac_schemas))
    assert problem.startswith(f"{COLLECTION}/collection.json: link rel=item")


def test_unreachable_catalog_url_is_a_clear_problem(stac_schemas: Path, no_proxy_for_loopback) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    problem = only(validate_catalog(f"http://127.0.0.1:{port}/catalog/", stac_schemas))
    assert problem.startswith("catalog.json: cannot read JSON (http://127.0.0.1:")
