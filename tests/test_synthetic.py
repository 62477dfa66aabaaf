"""The synthetic mirror is really in the public AEF layout and holds the changes it was asked to plant."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rio_cogeo import cog_validate
from shapely.geometry import box

from generator.synthetic import (
    BANDS,
    INDEX_NAME,
    NODATA,
    ZONE_OVERLAP_DEG,
    Hole,
    MirrorSpec,
    Plant,
    build_mirror,
    dequantize,
    embeddings,
    expected_change,
    quantize,
    zone_lon_range,
)

PLANT = Plant(box(12.003, 52.405, 12.010, 52.412), year=2020, change=0.4)
HOLE = Hole(box(12.005, 52.414, 12.010, 52.418), year=2018)
SPEC = MirrorSpec(
    bounds=(11.985, 52.40, 12.015, 52.42),
    years=(2018, 2020, 2022),
    tile_size=64,
    plants=(PLANT,),
    holes=(HOLE,),
    texture=True,
    seed=7,
)
INDEX_COLUMNS = [
    "fid",
    "path",
    "year",
    "crs",
    "utm_zone",
    "utm_west",
    "utm_south",
    "utm_east",
    "utm_north",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
    "geometry",
]
PATH_PATTERN = re.compile(r"^(\d{4})/(\d{1,2}[NS])/([0-9a-z]+)-(\d{10})-(\d{10})\.tiff$")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(scope="module")
def index(mirror: Path) -> list[dict]:
    return pq.read_table(mirror / INDEX_NAME).to_pylist()


def _tile_pixels(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data (64, rows, cols) in file order, lon, lat of the pixel centres)."""
    with rasterio.open(path) as src:
        data = src.read()
        rows, cols = np.mgrid[0 : src.height, 0 : src.width]
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return data, np.reshape(lon, rows.shape), np.reshape(lat, rows.shape)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − a·b of de-quantized, renormalized stacks (64, n)."""
    a, b = dequantize(a).astype(np.float64), dequantize(b).astype(np.float64)
    return 1.0 - np.sum(a * b, axis=0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)


def test_files_follow_the_public_naming(mirror: Path, index: list[dict]) -> None:
    assert index, "the mirror has no files"
    zones = set()
    for row in index:
        match = PATH_PATTERN.match(row["path"])
        assert match, row["path"]
        assert int(match[1]) == row["year"] and match[2] == row["utm_zone"]
        assert row["crs"] == f"EPSG:326{int(row['utm_zone'][:-1]):02d}"
        assert (mirror / row["path"]).is_file()
        zones.add(row["utm_zone"])
    assert zones == {"32N", "33N"}, "the bounds straddle 12°E, so both zones must have tiles"
    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*.tiff")) == sorted(
        r["path"] for r in index
    )


def test_files_are_bottom_up_int8_cogs_with_overviews(mirror: Path, index: list[dict]) -> None:
    for row in index:
        path = mirror / row["path"]
        with rasterio.open(path) as src:
            assert src.count == BANDS and set(src.dtypes) == {"int8"}
            assert src.nodatavals == (NODATA,) * BANDS
            assert src.transform.e > 0, "AEF files are stored bottom-up (positive y pixel size)"
            assert src.transform.a == 10.0 and src.crs.to_string() == row["crs"]
            assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
            assert (src.transform.c, src.transform.f) == (row["utm_west"], row["utm_south"])
            assert (src.transform.c + 10 * src.width, src.transform.f + 10 * src.height) == (
                row["utm_east"],
                row["utm_north"],
            )
            assert src.overviews(1)[-1] == src.width, "overviews go down to 1×1"
            assert src.block_shapes[0] == (64, 64)
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        valid, errors, _ = cog_validate(path, strict=True)
        assert valid, errors


def test_index_is_geoparquet_with_the_public_columns(mirror: Path, index: list[dict]) -> None:
    table = pq.read_table(mirror / INDEX_NAME)
    assert table.column_names == INDEX_COLUMNS
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert [r["fid"] for r in index] == list(range(len(index)))
    for row in index:
        geom = shapely.from_wkb(row["geometry"])
        assert geom.is_valid and not geom.is_empty
        assert geom.bounds == pytest.approx(
            (row["wgs84_west"], row["wgs84_south"], row["wgs84_east"], row["wgs84_north"])
        )
        z0, z1 = zone_lon_range(int(row["utm_zone"][:-1]))
        assert z0 - 1e-9 <= row["wgs84_west"] and row["wgs84_east"] <= z1 + 1e-9, "clipped to the zone"


def test_tiles_hold_data_only_inside_their_zone_and_overlap(mirror: Path, index: list[dict]) -> None:
    for row in index:
        data, lon, lat = _tile_pixels(mirror / row["path"])
        z0, z1 = zone_lon_range(int(row["utm_zone"][:-1]))
        nodata = (data == NODATA).all(axis=0)
        assert not ((data == NODATA) & ~nodata).any(), "nodata is in all bands at once"
        z0, z1 = z0 - ZONE_OVERLAP_DEG, z1 + ZONE_OVERLAP_DEG
        assert nodata[(lon < z0) | (lon >= z1)].all()
        west, south, east, north = SPEC.bounds
        inside = (lon > max(z0, west)) & (lon < min(z1, east)) & (lat > south) & (lat < north)
        hole = shapely.contains_xy(HOLE.geometry, lon, lat) & (row["year"] == HOLE.year)
        assert not nodata[inside & ~hole].any()


def test_same_spec_gives_the_same_bytes(tmp_path: Path, mirror: Path) -> None:
    build_mirror(tmp_path, SPEC)

    def digests(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(tmp_path) == digests(mirror)


def test_quantize_is_the_inverse_of_dequantize() -> None:
    v = np.arange(-127, 128, dtype=np.int8)
    np.testing.assert_array_equal(quantize(dequantize(v)), v)
    x = np.linspace(-1.0, 1.0, 1001)
    assert np.abs(dequantize(quantize(x)) - x).max() < 2 * 1.0 / 127.5
    assert quantize(np.array([np.nan]))[0] == NODATA


def test_truth_gives_the_planted_change_exactly() -> None:
    lon, lat = np.array([12.005, 12.0065, 11.99]), np.array([52.407, 52.41, 52.41])
    change = expected_change(SPEC, lon, lat, 2018, 2022)
    np.testing.assert_allclose(change, [0.4, 0.4, 0.0], atol=1e-12)
    angle = expected_change(SPEC, lon, lat, 2018, 2020, method="angle")
    np.testing.assert_allclose(angle[:2], np.arccos(0.6) / np.pi, atol=1e-12)
    vectors = embeddings(SPEC, lon, lat, 2022)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), 1.0, atol=1e-12)


def test_files_hold_the_planted_change_and_holes(mirror: Path, index: list[dict]) -> None:
    by_place = {}
    for row in index:
        if row["utm_zone"] == "33N":
            by_place.setdefault((row["utm_west"], row["utm_south"]), {})[row["year"]] = row["path"]
    planted = holes = 0
    for years in by_place.values():
        data = {year: _tile_pixels(mirror / path) for year, path in years.items()}
        _, lon, lat = data[2018]
        in_plant = shapely.contains_xy(PLANT.geometry, lon, lat)
        in_hole = shapely.contains_xy(HOLE.geometry, lon, lat)
        assert (data[2018][0][:, in_hole] == NODATA).all() and not (data[2020][0][:, in_hole] == NODATA).any()
        if in_plant.any():  # both years after the plant: no change at all
            assert _cosine(data[2020][0][:, in_plant], data[2022][0][:, in_plant]).max() < 1e-6
        keep = in_plant & ~in_hole
        if keep.any():
            change = _cosine(data[2018][0][:, keep], data[2020][0][:, keep])
            np.testing.assert_allclose(change, PLANT.change, atol=0.01)
        planted += int(in_plant.sum())
        holes += int(in_hole.sum())
    assert planted > 100 and holes > 50


def test_the_same_place_has_about_the_same_vector_in_both_zones(mirror: Path, index: list[dict]) -> None:
    """Pixels of the 32N tiles next to 12°E and the 33N pixel covering the same point agree."""
    to_33n = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    compared = 0
    for row in (r for r in index if r["utm_zone"] == "32N" and r["year"] == 2020):
        data, lon, lat = _tile_pixels(mirror / row["path"])
        edge = (lon > 11.9995) & (data != NODATA).all(axis=0)
        for r, c in zip(*np.nonzero(edge), strict=True):
            x, y = to_33n.transform(lon[r, c], lat[r, c])
            for other in (o for o in index if o["utm_zone"] == "33N" and o["year"] == 2020):
                if (
                    other["utm_west"] <= x < other["utm_east"]
                    and other["utm_south"] <= y < other["utm_north"]
                ):
                    with rasterio.open(mirror / other["path"]) as src:
                        i, j = src.index(x, y)
                        b = src.read(window=((i, i + 1), (j, j + 1)))[:, 0, 0]
                    if (b != NODATA).all():
                        assert _cosine(data[:, r, c][:, None], b[:, None])[0] < 0.01
                        compared += 1
    assert compared > 10
