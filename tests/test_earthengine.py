"""The Earth Engine source through the real earthengine-api client, against the local stand-in.

The stand-in (tests/ee_standin) serves a synthetic AEF mirror the way Earth Engine holds the dataset; the
same mirror read by the AEF source (local numpy) is the reference the server-side computation must match.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import ee
import numpy as np
import pytest
from google.oauth2.credentials import Credentials
from shapely.geometry import box

from generator.errors import AuthenticationError, RequestTooLargeError, SourceError
from generator.grid import Grid, grid_for
from generator.sources.aef import AefSource
from generator.sources.earthengine import EarthEngineSource
from generator.sources.ee_tiles import BYTES_PER_PIXEL, DEFAULT_TILE_SIZE, MAX_REQUEST_BYTES
from generator.synthetic import Hole, MirrorSpec, Plant, build_mirror
from tests.ee_standin import StandinServer

YEARS = (2018, 2020, 2023)
BOUNDS = (13.300, 52.500, 13.330, 52.520)
PLANT = box(13.305, 52.505, 13.312, 52.510)
HOLE = box(13.318, 52.512, 13.324, 52.516)
REGION = box(13.296, 52.498, 13.326, 52.518)  # reaches beyond the mirror to the west and south: nodata
TOKEN = "test-token"
TOLERANCE = 1e-3
FAST = {"client_retries": 1, "retry_attempts": 3, "backoff_s": 0.01}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ee_mirror")
    spec = MirrorSpec(
        bounds=BOUNDS,
        years=YEARS,
        tile_size=128,
        plants=(Plant(PLANT, year=2020, change=0.4),),
        holes=(Hole(HOLE, year=2023),),
        seed=3,
    )
    build_mirror(root, spec)
    return root


@pytest.fixture(scope="module")
def grid() -> Grid:
    return grid_for(REGION)


@pytest.fixture
def standin(mirror: Path):
    with StandinServer(mirror, token=TOKEN) as server:
        yield server


def ee_source(server: StandinServer, **kw) -> EarthEngineSource:
    """A source on the stand-in, 96 px tiles so a small region takes several requests."""
    args = {"tile_size": 96, "min_tile_size": 24, "credentials": Credentials(TOKEN), "max_concurrency": 4}
    return EarthEngineSource(project="test-project", url=server.url, **{**args, **FAST, **kw})


def assemble(source, grid: Grid, from_year: int, to_year: int, method: str) -> np.ndarray:
    out = np.full(grid.shape, -1.0, dtype=np.float32)  # -1: never written
    for w, values in source.compute(grid, from_year, to_year, method, source.windows(grid)):
        assert values.shape == (w.height, w.width) and values.dtype == np.float32
        out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = values
    assert not (out == -1.0).any(), "some pixels of the grid were never yielded"
    return out


_reference_cache: dict = {}


def reference(mirror: Path, grid: Grid, from_year: int, to_year: int, method: str) -> np.ndarray:
    key = (str(mirror), from_year, to_year, method)
    if key not in _reference_cache:
        aef = AefSource(str(mirror))
        try:
            _reference_cache[key] = assemble(aef, grid, from_year, to_year, method)
        finally:
            aef.close()
    return _reference_cache[key]


def assert_same_change(got: np.ndarray, want: np.ndarray) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(want)), "nodata masks differ"
    valid = ~np.isnan(want)
    assert valid.any()
    assert float(np.max(np.abs(got[valid] - want[valid]))) <= TOLERANCE


def report(server: StandinServer, label: str) -> list:
    entries = server.entries()
    sizes = sorted({(e.width, e.height) for e in entries if e.status == 200})
    statuses = [e.status for e in entries]
    print(
        f"\n{label}: {len(entries)} computePixels requests, statuses {sorted(set(statuses))}, "
        f"{sum(e.response_bytes for e in entries)} bytes down, tile sizes {sizes}"
    )
    failures = [e.message for e in server.log if e.message.startswith("stand-in failure")]
    assert not failures, failures[0]
    return entries


# --- known answers ----------------------------------------------------------------------------------------


def test_years_come_from_the_collection(standin: StandinServer) -> None:
    assert ee_source(standin).years() == list(YEARS)


def test_has_data_filters_by_year_and_bounds(standin: StandinServer) -> None:
    src = ee_source(standin)
    assert src.has_data(REGION, 2020)
    assert not src.has_data(REGION, 2019)
    assert not src.has_data(box(14.0, 52.0, 14.01, 52.01), 2020)


def test_standin_serves_unit_vectors(standin: StandinServer, grid: Grid) -> None:
    """a·a over the 64 float bands is 1 wherever there is data, as Earth Engine holds the dataset."""
    ee_source(standin)  # initializes the client on the stand-in
    a = ee.ImageCollection("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL").filterDate("2020-01-01", "2021-01-01")
    a = a.mosaic()
    img = a.multiply(a).reduce(ee.Reducer.sum()).unmask(-1, False).toFloat()
    t = grid.transform
    arr = ee.data.computePixels(
        {
            "expression": img,
            "fileFormat": "NUMPY_NDARRAY",
            "grid": {
                "crsCode": grid.crs,
                "dimensions": {"width": grid.width, "height": grid.height},
                "affineTransform": {
                    "scaleX": t.a,
                    "shearX": 0,
                    "translateX": t.c,
                    "shearY": 0,
                    "scaleY": t.e,
                    "translateY": t.f,
                },
            },
        }
    )
    norms = arr["sum"]
    valid = norms != -1
    assert valid.any() and (~valid).any()
    assert np.allclose(norms[valid], 1.0, atol=1e-5)


@pytest.mark.parametrize("method", ["cosine", "angle"])
def test_matches_the_aef_source(standin: StandinServer, mirror: Path, grid: Grid, method: str) -> None:
    src = ee_source(standin)
    want = reference(mirror, grid, 2018, 2023, method)
    got = assemble(src, grid, 2018, 2023, method)
    assert_same_change(got, want)
    assert np.isnan(got).any(), "the hole and the area beyond the mirror must be nodata"
    planted = np.nanmax(got)
    assert planted > (0.3 if method == "cosine" else 0.2), "the planted change must show"
    entries = report(standin, f"{method} {grid.width}×{grid.height} px")
    n_windows = len(src.windows(grid))
    assert len(entries) == src.stats.requests == n_windows > 1
    assert all(e.width <= 96 and e.height <= 96 for e in entries)
    assert src.stats.bytes == sum(w * h * 4 for w, h in src.stats.request_sizes)


def test_matches_the_aef_source_2018_2020(standin: StandinServer, mirror: Path, grid: Grid) -> None:
    got = assemble(ee_source(standin), grid, 2018, 2020, "cosine")
    assert_same_change(got, reference(mirror, grid, 2018, 2020, "cosine"))


def test_region_across_two_utm_zones(tmp_path: Path) -> None:
    """Tiles of both zones are mosaicked onto one grid, server-side as locally."""
    spec = MirrorSpec(bounds=(11.994, 52.500, 12.008, 52.508), years=(2018, 2020), tile_size=64, seed=5)
    build_mirror(tmp_path, spec)
    grid = grid_for(box(11.995, 52.501, 12.007, 52.507))
    zones = {p.parent.name for p in tmp_path.rglob("*.tiff")}
    assert zones == {"32N", "33N"}
    with StandinServer(tmp_path, token=TOKEN) as server:
        got = assemble(ee_source(server), grid, 2018, 2020, "cosine")
        report(server, f"two zones {grid.width}×{grid.height} px")
    want = reference(tmp_path, grid, 2018, 2020, "cosine")
    # Each zone's files reach a little past the zone's edge, so both mosaics cover the seam without a gap.
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert not np.isnan(want).any()
    assert float(np.nanmax(np.abs(got - want))) <= TOLERANCE


def test_requests_run_in_parallel_up_to_max_concurrency(standin: StandinServer, grid: Grid) -> None:
    src = ee_source(standin, max_concurrency=3)
    assemble(src, grid, 2018, 2023, "cosine")
    assert 1 < standin.max_in_flight <= 3


def test_finished_tiles_wait_for_the_consumer(standin: StandinServer, grid: Grid) -> None:
    """Memory stays bounded: no more than max_concurrency tiles are requested ahead of the consumer."""
    src = ee_source(standin, max_concurrency=2)
    blocks = src.compute(grid, 2018, 2023, "cosine", src.windows(grid))
    next(blocks)
    time.sleep(0.5)
    assert len(standin.entries()) <= 1 + 2 < len(src.windows(grid))
    blocks.close()
    assert src.stats.tiles_done == 1 and src.stats.tiles_total == len(src.windows(grid))


def test_products_and_statistics_agree(standin: StandinServer, mirror: Path, grid: Grid, tmp_path: Path):
    """Through the pipeline: same statistics from both sources; a failing job leaves no COG behind."""
    pipeline = pytest.importorskip("changecat.pipeline")
    from generator.plan import Job, Region

    job = Job(Region("berlin", "Berlin", REGION), 2018, 2023, "cosine", grid)
    aef = AefSource(str(mirror))
    try:
        want = pipeline.make_product(job, aef, tmp_path / "aef").stats
    finally:
        aef.close()
    got = pipeline.make_product(job, ee_source(standin), tmp_path / "ee").stats
    assert got.count == want.count
    for name in ("minimum", "maximum", "mean", "stddev"):
        assert abs(getattr(got, name) - getattr(want, name)) <= TOLERANCE, name
    standin.inject("500", -1)
    with pytest.raises(SourceError):
        pipeline.make_product(job, ee_source(standin, client_retries=0, retry_attempts=1), tmp_path / "bad")
    assert not list((tmp_path / "bad").glob("*.tif"))


# --- limits and faults ------------------------------------------------------------------------------------


def test_tiles_are_as_large_as_the_limits_allow() -> None:
    assert DEFAULT_TILE_SIZE == 3072
    assert DEFAULT_TILE_SIZE**2 * BYTES_PER_PIXEL <= MAX_REQUEST_BYTES
    assert (DEFAULT_TILE_SIZE + 512) ** 2 * BYTES_PER_PIXEL > MAX_REQUEST_BYTES


def test_standin_enforces_the_request_size_with_earth_engines_text(standin: StandinServer) -> None:
    ee_source(standin)
    grid = {
        "crsCode": "EPSG:32633",
        "dimensions": {"width": 4000, "height": 4000},
        "affineTransform": {
            "scaleX": 10,
            "shearX": 0,
            "translateX": 0,
            "shearY": 0,
            "scaleY": -10,
            "translateY": 0,
        },
    }
    with pytest.raises(ee.EEException) as exc:
        ee.data.computePixels(
            {"expression": ee.Image.constant(1).toFloat(), "fileFormat": "NUMPY_NDARRAY", "grid": grid}
        )
    assert str(exc.value) == (
        "Total request size (80000000 bytes) must be less than or equal to 50331648 bytes."
    )


def test_retries_through_429_500_and_dropped_connections(
    standin: StandinServer, mirror: Path, grid: Grid
) -> None:
    src = ee_source(standin)
    for kind, count in (("429", 3), ("500", 2), ("drop", 1)):
        standin.inject(kind, count)
    got = assemble(src, grid, 2018, 2023, "cosine")
    assert_same_change(got, reference(mirror, grid, 2018, 2023, "cosine"))
    entries = report(standin, "under 3×429, 2×500, 1 drop")
    assert sorted(e.fault for e in entries if e.fault) == ["429", "429", "429", "500", "500", "drop"]
    assert src.stats.retries >= 1, "with 1 client retry, some faults must reach our own backoff"


def test_get_info_retries_too(standin: StandinServer) -> None:
    src = ee_source(standin)
    standin.inject("503", 3, endpoint="value:compute")
    assert src.years() == list(YEARS)
    assert [e.status for e in standin.log if e.endpoint == "value:compute"] == [503, 503, 503, 200]


def test_tiles_split_on_user_memory_limit(mirror: Path, grid: Grid) -> None:
    with StandinServer(mirror, token=TOKEN, memory_limit_pixels=50 * 50) as server:
        src = ee_source(server)
        got = assemble(src, grid, 2018, 2023, "angle")
        entries = report(server, "memory limit 2500 px")
    assert_same_change(got, reference(mirror, grid, 2018, 2023, "angle"))
    refused = [e for e in entries if e.status == 400]
    assert refused and all(e.message == "User memory limit exceeded." for e in refused)
    assert src.stats.splits == len(refused)
    assert all(e.width * e.height <= 2500 for e in entries if e.status == 200)


def test_tiles_split_on_total_request_size(mirror: Path, grid: Grid) -> None:
    with StandinServer(mirror, token=TOKEN, max_request_bytes=60 * 60 * 5) as server:
        src = ee_source(server)
        got = assemble(src, grid, 2018, 2023, "cosine")
        entries = report(server, "size limit 18000 bytes")
    assert_same_change(got, reference(mirror, grid, 2018, 2023, "cosine"))
    assert any(e.message.startswith("Total request size (") for e in entries if e.status == 400)
    assert src.stats.splits > 0


def test_too_large_even_at_minimum_size(mirror: Path, grid: Grid) -> None:
    with StandinServer(mirror, token=TOKEN, memory_limit_pixels=10) as server:
        src = ee_source(server)
        with pytest.raises(RequestTooLargeError, match=r"minimum tile size.*User memory limit exceeded"):
            assemble(src, grid, 2018, 2023, "cosine")


def test_persistent_timeout_fails_cleanly(standin: StandinServer, grid: Grid) -> None:
    standin.inject("timeout", -1)
    src = ee_source(standin)
    with pytest.raises(RequestTooLargeError, match="Computation timed out"):
        assemble(src, grid, 2018, 2023, "cosine")


def test_persistent_server_error_is_a_source_error(standin: StandinServer, grid: Grid) -> None:
    standin.inject("500", -1)
    src = ee_source(standin, client_retries=0, retry_attempts=2)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"kept failing .* after 2 retries.*internal error"):
        assemble(src, grid, 2018, 2023, "cosine")
    assert time.monotonic() - started < 10


def test_unimplemented_algorithm_is_a_clear_http_400(standin: StandinServer) -> None:
    ee_source(standin)
    with pytest.raises(ee.EEException, match=r"'Image\.focalMax' is not implemented"):
        ee.Image.constant(1).focalMax(3).reduce(ee.Reducer.sum()).getInfo()
    assert [e.status for e in standin.log if e.endpoint == "value:compute"] == [400]


def test_unreachable_endpoint_is_a_source_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(SourceError, match=f"cannot open Earth Engine at http://127.0.0.1:{port}"):
        EarthEngineSource(
            project="test-project", url=f"http://127.0.0.1:{port}", credentials=Credentials(TOKEN), **FAST
        )


# --- credentials ------------------------------------------------------------------------------------------


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home without Earth Engine or gcloud credentials, and no metadata-server probe."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_SERVICE_ACCOUNT_KEY", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)


def test_missing_credentials_say_how_to_authenticate(no_credentials: None) -> None:
    with pytest.raises(AuthenticationError, match="earthengine authenticate"):
        EarthEngineSource(project="test-project")


def test_unreadable_service_account_key(no_credentials: None, tmp_path: Path, monkeypatch) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": "SECRET-KEY-MATERIAL"}))
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", str(key))
    with pytest.raises(AuthenticationError) as exc:
        EarthEngineSource(project="test-project")
    assert "EE_SERVICE_ACCOUNT_KEY" in str(exc.value) and "SECRET" not in str(exc.value)


def test_rejected_credentials(standin: StandinServer) -> None:
    with pytest.raises(AuthenticationError, match="refused the credentials") as exc:
        # ee.Initialize may already ask the server (it does when no earlier test initialized the client)
        ee_source(standin, credentials=Credentials("wrong-token")).years()
    assert "wrong-token" not in str(exc.value)


def test_standin_url_without_credentials_is_anonymous(no_credentials: None, mirror: Path) -> None:
    with StandinServer(mirror) as server:
        src = EarthEngineSource(project="test-project", url=server.url)
        assert src.years() == list(YEARS)


def test_google_credentials_are_never_sent_to_another_host(
    no_credentials: None, mirror: Path, tmp_path: Path, monkeypatch
) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": "SECRET-KEY-MATERIAL"}))
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", str(key))
    with StandinServer(mirror, token="only-for-google") as server:
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            # the key is not even read, and the stand-in, which wants a token, gets none
            EarthEngineSource(project="test-project", url=server.url).years()
        assert all("SECRET" not in e.message for e in server.log)


# --- standalone -------------------------------------------------------------------------------------------


def test_standin_runs_standalone(mirror: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ee_standin", "--mirror", str(mirror), "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "Earth Engine stand-in" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/$discovery/rest?version=v1", timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["version"] == "v1"
        fault = json.dumps({"kind": "429", "count": 1, "endpoint": "algorithms"}).encode()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_standin/faults", data=fault, timeout=10).close()
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/projects/p/algorithms", timeout=10)
        assert (
            exc.value.code == 429 and json.loads(exc.value.read())["error"]["status"] == "RESOURCE_EXHAUSTED"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_standin/log", timeout=10) as r:
            log = json.loads(r.read())
        assert [(e["endpoint"], e["status"], e["fault"]) for e in log][-1] == ("algorithms", 429, "429")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_progress_names_tiles_and_bytes(standin: StandinServer, grid: Grid) -> None:
    src = ee_source(standin)
    assert src.progress() == "tiles 0/0, 0.0 MB"
    assemble(src, grid, 2018, 2023, "cosine")
    n = len(src.windows(grid))
    assert src.progress() == f"tiles {n}/{n}, {grid.width * grid.height * 4 / 1e6:.1f} MB"
