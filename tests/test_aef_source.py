"""AefSource on a synthetic AEF mirror: known answers, pixel alignment, zones, holes, local/HTTP/S3 roots."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest
import rasterio
import shapely
from moto.server import ThreadedMotoServer
from pyproj import Transformer
from RangeHTTPServer import RangeRequestHandler
from shapely.geometry import box

from generator.errors import SourceError
from generator.grid import Grid, grid_for, to_crs
from generator.methods import unit_dot
from generator.sources.aef import AefSource
from generator.synthetic import (
    INDEX_NAME,
    NODATA,
    Hole,
    MirrorSpec,
    Plant,
    build_mirror,
    dequantize,
    expected_change,
    planted_value,
)
from generator.urls import public_href, redact

EAST_PLANT = Plant(box(12.003, 52.405, 12.010, 52.412), year=2020, change=0.4)  # inside 33N
CROSS_PLANT = Plant(box(11.996, 52.413, 12.004, 52.418), year=2022, change=1.2)  # across 12°E
HOLE = Hole(box(11.988, 52.403, 11.994, 52.408), year=2018)  # inside 32N
SPEC = MirrorSpec(
    bounds=(11.985, 52.40, 12.015, 52.42),
    years=(2018, 2020, 2022),
    tile_size=64,
    plants=(EAST_PLANT, CROSS_PLANT),
    holes=(HOLE,),
    texture=True,
    seed=11,
)
ALL = box(11.986, 52.401, 12.014, 52.419)
NO_PROXY = "127.0.0.1,localhost"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aef")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(scope="module")
def source(mirror: Path) -> Iterator[AefSource]:
    src = AefSource(str(mirror))
    yield src
    src.close()


@pytest.fixture
def http_root(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The mirror served with byte ranges on 127.0.0.1."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, NO_PROXY)
    handler = functools.partial(RangeRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_root(
    mirror: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """The mirror uploaded to a bucket of a local S3 server, with the standard AWS variables set.

    Each test gets its own prefix so GDAL's per-process caches cannot answer for another test.
    """
    prefix = request.node.name.removeprefix("test_")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, NO_PROXY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.delenv("AWS_NO_SIGN_REQUEST", raising=False)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="aef-mirror")
    for path in mirror.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(mirror).as_posix()}"
            s3.upload_file(str(path), "aef-mirror", key, ExtraArgs={"ACL": "public-read"})
    return f"s3://aef-mirror/{prefix}"


def compute_all(src: AefSource, grid: Grid, y0: int, y1: int, method: str = "cosine") -> np.ndarray:
    out = np.full(grid.shape, -1.0, dtype=np.float32)
    for window, values in src.compute(grid, y0, y1, method, src.windows(grid)):
        assert values.dtype == np.float32 and values.shape == (window.height, window.width)
        out[
            window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width
        ] = values
    assert not (out == -1.0).any(), "every window is computed"
    return out


def pixel_lonlat(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = rasterio.transform.xy(grid.transform, rows.ravel(), cols.ravel())
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return np.reshape(lon, grid.shape), np.reshape(lat, grid.shape)


def test_years_and_coverage_come_from_the_index(source: AefSource) -> None:
    assert source.years() == [2018, 2020, 2022]
    assert source.has_data(box(12.0, 52.41, 12.001, 52.411), 2020)
    assert not source.has_data(box(13.0, 52.41, 13.01, 52.42), 2020), "outside the mirror"
    assert not source.has_data(ALL, 2019), "year not in the index"


def test_info_names_the_root_and_index(source: AefSource, mirror: Path) -> None:
    info = source.info
    assert (info.kind, info.dataset) == ("aef", "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL")
    assert info.location == str(mirror) and info.derived_from == []  # a local path is no link for readers


def test_public_href_drops_credentials_and_query() -> None:
    assert public_href("https://user:secret@host.example:8443/aef/?X-Amz-Signature=abc#x") == (
        "https://host.example:8443/aef/"
    )
    assert public_href("/data/aef") == "/data/aef"
    gdal = "HTTP 403 on https://b.example/t.tiff?X-Amz-Credential=AKIA&X-Amz-Signature=abc (denied)"
    assert redact(gdal) == "HTTP 403 on https://b.example/t.tiff (denied)"
    assert redact("'s3://key:secret@bucket/a.tif' missing") == "'s3://bucket/a.tif' missing"


def test_grid_origin_is_on_the_source_lattice(source: AefSource, mirror: Path) -> None:
    for crs in ("EPSG:32632", "EPSG:32633"):
        ox, oy = source.grid_origin(crs)
        grid = grid_for(ALL, (ox, oy))
        for tif in mirror.glob(f"2018/{crs[-2:]}N/*.tiff"):
            with rasterio.open(tif) as src:
                assert (src.transform.c - ox) % 10 == 0 and (src.transform.f - oy) % 10 == 0
        assert (grid.transform.c - ox) % 10 == 0 and (grid.transform.f - oy) % 10 == 0


def test_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"does not exist.*aef_index.parquet"):
        AefSource(str(tmp_path / "nowhere"))


def test_root_without_index_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"aef_index.parquet"):
        AefSource(str(tmp_path))


def test_unreadable_index_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / INDEX_NAME).write_text("not parquet")
    with pytest.raises(SourceError, match=r"could not be read|not a GeoParquet"):
        AefSource(str(tmp_path))


@pytest.fixture
def mirror_missing_a_tile(mirror: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the mirror whose index lists a file that is not there."""
    shutil.copytree(mirror, tmp_path / "aef")
    lost = next((tmp_path / "aef").glob("2022/33N/*.tiff"))
    lost.unlink()
    return tmp_path / "aef", lost.name


def test_missing_tile_is_a_source_error_naming_it(mirror_missing_a_tile: tuple[Path, str]) -> None:
    root, name = mirror_missing_a_tile
    src = AefSource(str(root))
    try:
        grid = grid_for(ALL, src.grid_origin("EPSG:32633"))
        with pytest.raises(SourceError, match=name):
            compute_all(src, grid, 2018, 2022)
    finally:
        src.close()


@pytest.fixture
def mirror_with_a_band_missing(mirror: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the mirror in which one file's band 5 was never written (its tiles absent, read back as
    nodata) while its 63 other bands hold data: a damaged file, never a valid AEF one."""
    shutil.copytree(mirror, tmp_path / "aef")
    damaged = sorted((tmp_path / "aef" / "2018" / "33N").glob("*.tiff"))[0]
    with rasterio.open(damaged) as src:
        profile, data = src.profile, src.read()
    profile.update(sparse_ok=True, interleave="band")  # band by band, as the public files are
    with rasterio.open(damaged, "w", **profile) as dst:
        for band in range(1, profile["count"] + 1):
            if band != 5:
                dst.write(data[band - 1], band)
    return tmp_path / "aef", damaged.name


def test_a_band_without_data_where_the_others_have_some_is_a_source_error(
    mirror_with_a_band_missing: tuple[Path, str],
) -> None:
    root, name = mirror_with_a_band_missing
    src = AefSource(str(root))
    try:
        grid = grid_for(ALL, src.grid_origin("EPSG:32633"))
        message = rf"{name} could not be read: 1 of its 64 bands \(from band 5\) came back without data"
        with pytest.raises(SourceError, match=message):
            compute_all(src, grid, 2018, 2022)
    finally:
        src.close()


@pytest.mark.parametrize("method", ["cosine", "angle"])
def test_planted_change_comes_out_with_its_area(source: AefSource, method: str) -> None:
    region = EAST_PLANT.geometry.buffer(0.002)
    grid = grid_for(region, source.grid_origin("EPSG:32633"))
    assert grid.crs == "EPSG:32633"
    values = compute_all(source, grid, 2018, 2020, method)
    lon, lat = pixel_lonlat(grid)
    inside = shapely.contains_xy(EAST_PLANT.geometry, lon, lat)
    planted = planted_value(EAST_PLANT.change, method)
    np.testing.assert_allclose(values[inside], planted, atol=0.01)
    np.testing.assert_allclose(values[~inside], 0.0, atol=1e-3)
    changed = values > planted / 2
    assert changed.sum() == inside.sum() > 400
    planted_area = to_crs(EAST_PLANT.geometry, "EPSG:4326", grid.crs).area
    assert changed.sum() * grid.pixel_area_m2 == pytest.approx(planted_area, rel=0.03)


def test_holes_give_nan_only_in_their_year(source: AefSource) -> None:
    region = HOLE.geometry.buffer(0.001)
    grid = grid_for(region, source.grid_origin("EPSG:32632"))
    lon, lat = pixel_lonlat(grid)
    in_hole = shapely.contains_xy(HOLE.geometry, lon, lat)
    with_hole = compute_all(source, grid, 2018, 2022)
    assert np.isnan(with_hole[in_hole]).all() and not np.isnan(with_hole[~in_hole]).any()
    assert not np.isnan(compute_all(source, grid, 2020, 2022)).any()


def test_region_across_two_zones_is_right_and_continuous(source: AefSource) -> None:
    grid = grid_for(ALL, source.grid_origin("EPSG:32633"))
    values = compute_all(source, grid, 2020, 2022)
    lon, lat = pixel_lonlat(grid)
    assert (lon < 11.995).any(), "part of the grid lies in 32N and is read from the 32N tiles"
    in_mirror = shapely.contains_xy(box(*SPEC.bounds).buffer(-0.0002), lon, lat)
    assert in_mirror.mean() > 0.9 and not np.isnan(values[in_mirror]).any(), "no gap along 12°E"
    truth = expected_change(SPEC, lon.ravel(), lat.ravel(), 2020, 2022).reshape(grid.shape)
    core = shapely.contains_xy(CROSS_PLANT.geometry.buffer(-0.0003), lon, lat)
    assert core.sum() > 100 and (lon[core] < 12.0).any() and (lon[core] > 12.0).any()
    np.testing.assert_allclose(values[core], CROSS_PLANT.change, atol=0.01)
    off = np.abs(values[in_mirror] - truth[in_mirror]) > 0.01
    assert off.mean() < 0.005, "only pixels on a plant edge of the reprojected zone may differ"


def test_output_pixels_are_the_source_pixels(source: AefSource, mirror: Path) -> None:
    """In its own zone the output equals the change computed straight from the tiles' pixels."""
    grid = grid_for(box(12.002, 52.402, 12.012, 52.414), source.grid_origin("EPSG:32633"))
    values = compute_all(source, grid, 2018, 2020)
    compared = 0
    for a_path in mirror.glob("2018/33N/*.tiff"):
        b_path = next(mirror.glob(f"2020/33N/*{a_path.name[-27:]}"))
        with rasterio.open(a_path) as a_src, rasterio.open(b_path) as b_src:
            a, b, t = a_src.read(), b_src.read(), a_src.transform
        cols = (t.c - grid.transform.c) / 10 + np.arange(a.shape[2])
        rows = (grid.transform.f - t.f) / 10 - 1 - np.arange(a.shape[1])  # file row 0 is the south edge
        assert np.all(cols == np.round(cols)) and np.all(rows == np.round(rows)), "same pixel lattice"
        r_ok = (rows >= 0) & (rows < grid.height)
        c_ok = (cols >= 0) & (cols < grid.width)
        if not r_ok.any() or not c_ok.any():
            continue
        a, b = a[:, r_ok][:, :, c_ok], b[:, r_ok][:, :, c_ok]
        direct = 1.0 - unit_dot(dequantize(a), dequantize(b))
        direct[(a == NODATA).all(axis=0) | (b == NODATA).all(axis=0)] = np.nan
        got = values[np.ix_(rows[r_ok].astype(int), cols[c_ok].astype(int))]
        np.testing.assert_allclose(got, np.clip(direct, 0, 2), atol=1e-6)
        compared += got.size
    assert compared == grid.width * grid.height


def test_http_root_gives_the_same_blocks(source: AefSource, http_root: str) -> None:
    grid = grid_for(ALL, source.grid_origin("EPSG:32633"))
    remote = AefSource(http_root)
    try:
        assert remote.years() == source.years()
        assert remote.info.location == http_root.rstrip("/")
        assert remote.info.derived_from == [http_root.rstrip("/") + "/aef_index.parquet"]
        np.testing.assert_array_equal(
            compute_all(remote, grid, 2018, 2022), compute_all(source, grid, 2018, 2022)
        )
    finally:
        remote.close()


def test_http_root_without_index_is_a_source_error(http_root: str) -> None:
    with pytest.raises(SourceError, match="HTTP 404"):
        AefSource(http_root + "missing/")


def test_s3_root_gives_the_same_blocks(source: AefSource, s3_root: str) -> None:
    grid = grid_for(ALL, source.grid_origin("EPSG:32633"))
    remote = AefSource(s3_root)
    try:
        assert remote.years() == source.years() and remote.info.location == s3_root
        np.testing.assert_array_equal(
            compute_all(remote, grid, 2018, 2022), compute_all(source, grid, 2018, 2022)
        )
    finally:
        remote.close()


def test_s3_root_reads_anonymously(source: AefSource, s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A public bucket (public-read objects) read with AWS_NO_SIGN_REQUEST and no keys."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    grid = grid_for(EAST_PLANT.geometry, source.grid_origin("EPSG:32633"))
    remote = AefSource(s3_root)
    try:
        np.testing.assert_array_equal(
            compute_all(remote, grid, 2018, 2022), compute_all(source, grid, 2018, 2022)
        )
    finally:
        remote.close()


def test_s3_root_without_index_is_a_source_error(s3_root: str) -> None:
    with pytest.raises(SourceError, match=r"s3://aef-mirror/nothing-here/aef_index.parquet"):
        AefSource("s3://aef-mirror/nothing-here")
