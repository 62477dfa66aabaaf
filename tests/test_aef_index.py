"""The AEF index as the public copy has it: a geometry column of any name (GeoParquet ``geo`` metadata) or
none (``wgs84_*`` bounds), absolute ``s3://`` tile paths in an index read over https, a host that refuses
Python-urllib's User-Agent, and the index's release (ETag or size) recorded for provenance."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from RangeHTTPServer import RangeRequestHandler
from shapely.geometry import box

from generator.errors import SourceError
from generator.grid import Grid, grid_for
from generator.sources.aef import AefSource
from generator.sources.aef_index import (
    BOUNDS_COLUMNS,
    INDEX_NAME,
    PUBLIC_BUCKET,
    PUBLIC_BUCKET_REGION,
    load_index,
    tile_gdal_options,
)
from generator.sources.remote import USER_AGENT
from generator.synthetic import MirrorSpec, Plant, build_mirror

SPEC = MirrorSpec(
    bounds=(13.300, 52.500, 13.312, 52.508),
    years=(2018, 2020),
    tile_size=64,
    plants=(Plant(box(13.303, 52.502, 13.307, 52.505), year=2020, change=0.4),),
    seed=7,
)
REGION = box(13.301, 52.501, 13.311, 52.507)
ETAG = '"aef-index-2025-07-30"'
NO_PROXY = "127.0.0.1,localhost"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aef_index")
    build_mirror(root, SPEC)
    return root


@pytest.fixture(scope="module")
def reference(mirror: Path) -> tuple[Grid, np.ndarray]:
    src = AefSource(str(mirror))
    try:
        grid = grid_for(REGION, src.grid_origin("EPSG:32633"))
        return grid, compute_all(src, grid)
    finally:
        src.close()


def compute_all(src: AefSource, grid: Grid) -> np.ndarray:
    out = np.full(grid.shape, -1.0, dtype=np.float32)
    for w, values in src.compute(grid, 2018, 2020, "cosine", src.windows(grid)):
        out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    assert not (out == -1.0).any()
    return out


def rewrite_index(root: Path, change) -> None:
    """Rewrite ``root``'s index with ``change(table, geo) -> (table, geo or None)``."""
    table = pq.read_table(root / INDEX_NAME)
    geo = json.loads(table.schema.metadata[b"geo"])
    table, geo = change(table.replace_schema_metadata(None), geo)
    if geo is not None:
        table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, root / INDEX_NAME)


def copy_of(mirror: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(mirror, tmp_path / "aef"))


# --- the geometry column ------------------------------------------------------------------------------------


def test_geometry_column_named_in_the_geo_metadata(mirror: Path, tmp_path: Path, reference) -> None:
    def to_geom(table: pa.Table, geo: dict) -> tuple[pa.Table, dict]:
        i = table.schema.get_field_index("geometry")
        geo["primary_column"] = "geom"
        geo["columns"] = {"geom": geo["columns"].pop("geometry")}
        return table.rename_columns([*table.column_names[:i], "geom", *table.column_names[i + 1 :]]), geo

    root = copy_of(mirror, tmp_path)
    rewrite_index(root, to_geom)
    src = AefSource(str(root))
    try:
        grid, want = reference
        assert src.years() == [2018, 2020]
        assert not src.has_data(box(14.0, 52.0, 14.01, 52.01), 2018)
        np.testing.assert_array_equal(compute_all(src, grid), want)
    finally:
        src.close()


def test_no_geometry_column_uses_the_wgs84_bounds(mirror: Path, tmp_path: Path, reference) -> None:
    root = copy_of(mirror, tmp_path)
    rewrite_index(root, lambda table, geo: (table.drop_columns(["geometry"]), None))
    index = load_index(str(root))
    original = load_index(str(mirror))
    for got, want in zip(index.rows, original.rows, strict=True):
        assert got.geometry.equals(box(*want.geometry.bounds))
    src = AefSource(str(root))
    try:
        grid, want = reference
        assert src.has_data(REGION, 2020) and not src.has_data(box(14.0, 52.0, 14.01, 52.01), 2020)
        np.testing.assert_array_equal(compute_all(src, grid), want)
    finally:
        src.close()


def test_no_footprint_at_all_is_a_clear_error(mirror: Path, tmp_path: Path) -> None:
    root = copy_of(mirror, tmp_path)
    rewrite_index(root, lambda table, geo: (table.drop_columns(["geometry", *BOUNDS_COLUMNS]), None))
    with pytest.raises(SourceError, match=r"lacks column\(s\) wgs84_west, wgs84_south.*'geo' metadata"):
        AefSource(str(root))


# --- over http, and absolute s3:// tile paths ---------------------------------------------------------


class PickyHandler(RangeRequestHandler):
    """Serves files with byte ranges and an ETag, but answers 403 to Python-urllib's default User-Agent (as
    the Source Cooperative host does); records each request's path and User-Agent."""

    seen: list[tuple[str, str]]
    refused: tuple[str, ...] = ("Python-urllib",)

    def log_message(self, *args) -> None:
        pass

    def send_head(self):  # type: ignore[override]
        agent = self.headers.get("User-Agent", "")
        self.seen.append((self.path, agent))
        if not agent or agent.startswith(self.refused):
            self.send_error(403, "Forbidden")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        if self.path.endswith(INDEX_NAME):
            self.send_header("ETag", ETAG)
        super().end_headers()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """serve(folder, refused User-Agent prefixes) → (root URL, the (path, User-Agent) of each request)."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, NO_PROXY)
    servers = []

    def start(
        folder: Path, refused: tuple[str, ...] = ("Python-urllib",)
    ) -> tuple[str, list[tuple[str, str]]]:
        seen: list[tuple[str, str]] = []
        handler_class = type("H", (PickyHandler,), {"seen": seen, "refused": refused})
        handler = functools.partial(handler_class, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_index_and_tiles_are_read_with_a_real_user_agent(mirror: Path, serve, reference) -> None:
    url, seen = serve(mirror)
    src = AefSource(url)
    try:
        grid, want = reference
        np.testing.assert_array_equal(compute_all(src, grid), want)
    finally:
        src.close()
    assert {path for path, _ in seen} >= {f"/{INDEX_NAME}"} and any(p.endswith(".tiff") for p, _ in seen)
    assert {agent for _, agent in seen} == {USER_AGENT}, "index (fsspec) and tiles (GDAL) both"
    assert USER_AGENT.startswith("changecat/")
    assert src.info.version == f"{INDEX_NAME} etag {ETAG.strip(chr(34))}"


def test_http_refusal_names_the_status(tmp_path: Path, serve) -> None:
    url, _ = serve(tmp_path)  # no index there
    with pytest.raises(SourceError, match=rf"{url}/{INDEX_NAME} could not be fetched: HTTP 404"):
        AefSource(url)
    (tmp_path / INDEX_NAME).write_bytes(b"")
    url, _ = serve(tmp_path, refused=("Python-urllib", "changecat/"))
    with pytest.raises(SourceError, match=rf"{url}/{INDEX_NAME} could not be fetched: HTTP 403 Forbidden"):
        AefSource(url)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_https_index_with_absolute_s3_tile_paths(
    mirror: Path, tmp_path: Path, serve, s3_server: str, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    """As the public copy: the index over http(s), its ``path`` column absolute s3:// URLs into the public
    bucket, read unsigned (AWS_NO_SIGN_REQUEST=YES, no keys) with no AWS_REGION set."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=PUBLIC_BUCKET_REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    s3.create_bucket(
        Bucket=PUBLIC_BUCKET, CreateBucketConfiguration={"LocationConstraint": PUBLIC_BUCKET_REGION}
    )
    prefix = "tge-labs/aef/v1/annual"
    for path in mirror.rglob("*.tiff"):
        key = f"{prefix}/{path.relative_to(mirror).as_posix()}"
        s3.upload_file(str(path), PUBLIC_BUCKET, key, ExtraArgs={"ACL": "public-read"})
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    shutil.copy(mirror / INDEX_NAME, index_dir / INDEX_NAME)

    def absolute(table: pa.Table, geo: dict) -> tuple[pa.Table, dict]:
        urls = [f"s3://{PUBLIC_BUCKET}/{prefix}/{p}" for p in table.column("path").to_pylist()]
        return table.set_column(table.schema.get_field_index("path"), "path", pa.array(urls)), geo

    rewrite_index(index_dir, absolute)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    url, seen = serve(index_dir)
    index = load_index(url)
    assert all(r.href.startswith(f"s3://{PUBLIC_BUCKET}/{prefix}/") for r in index.rows)
    assert index.gdal_options["AWS_REGION"] == PUBLIC_BUCKET_REGION
    src = AefSource(url)
    try:
        grid, want = reference
        np.testing.assert_array_equal(compute_all(src, grid), want)
    finally:
        src.close()
    assert [p for p, _ in seen if p.endswith(".tiff")] == [], "tiles come from the bucket, not the index host"


@pytest.mark.parametrize(
    "environ, hrefs, region",
    [
        ({}, [f"s3://{PUBLIC_BUCKET}/tge-labs/aef/2020/33N/a.tiff"], PUBLIC_BUCKET_REGION),
        ({"AWS_REGION": "eu-central-1"}, [f"s3://{PUBLIC_BUCKET}/a.tiff"], None),  # GDAL reads AWS_REGION
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, ["s3://other-bucket/a.tiff"], None),
        ({}, ["https://data.example.org/a.tiff", "/data/b.tiff"], None),
    ],
)
def test_tile_region_for_gdal(environ: dict, hrefs: list[str], region: str | None) -> None:
    options = tile_gdal_options(hrefs, environ)
    assert options.get("AWS_REGION") == region
    assert options["GDAL_HTTP_USERAGENT"] == USER_AGENT


def test_local_index_version_is_its_size_and_time(mirror: Path) -> None:
    size = (mirror / INDEX_NAME).stat().st_size
    version = load_index(str(mirror)).version
    assert version.startswith(f"{INDEX_NAME}, {size} bytes, modified 20")
