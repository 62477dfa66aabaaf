"""The Earth Engine source's endpoint as the real service has it, through the real earthengine-api client and
the stand-in: the high-volume endpoint by default (also after a stand-in), a client deadline so a stalled
connection is retried, and Google's 403 texts as PermissionDeniedError."""

from __future__ import annotations

import threading
from pathlib import Path

import ee
import pytest
from google.oauth2.credentials import Credentials

from generator.errors import PermissionDeniedError, SourceError
from generator.grid import Grid, grid_for
from generator.sources.earthengine import HIGH_VOLUME_URL, EarthEngineSource
from generator.sources.ee_tiles import classify
from generator.synthetic import MirrorSpec, build_mirror
from tests.ee_standin import StandinServer
from tests.test_earthengine import (
    BOUNDS,
    REGION,
    TOKEN,
    YEARS,
    assemble,
    assert_same_change,
    ee_source,
    reference,
)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ee_endpoint")
    build_mirror(root, MirrorSpec(bounds=BOUNDS, years=YEARS, tile_size=128, seed=3))
    return root


@pytest.fixture(scope="module")
def grid() -> Grid:
    return grid_for(REGION)


@pytest.fixture
def standin(mirror: Path):
    with StandinServer(mirror, token=TOKEN) as server:
        yield server


def test_a_stalled_request_times_out_and_is_retried(standin: StandinServer, mirror: Path, grid: Grid) -> None:
    """A connection that never answers fails at the client deadline and the tile is asked again; without a
    deadline the worker would wait forever (here: until the stand-in lets go after STALL_MAX_S)."""
    src = ee_source(standin, deadline_s=3.0)
    standin.inject("stall", 1)
    result: dict = {}

    def work() -> None:
        try:
            result["got"] = assemble(src, grid, 2018, 2023, "cosine")
        except Exception as exc:
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "a stalled request held the run"
    assert "error" not in result, result.get("error")
    assert_same_change(result["got"], reference(mirror, grid, 2018, 2023, "cosine"))
    assert [e.fault for e in standin.entries() if e.fault] == ["stall"]
    # (A slow answer under load may time out too and be asked again: at least one answer per tile.)
    assert len([e for e in standin.entries() if e.status == 200]) >= len(src.windows(grid))


def test_permission_denied_is_its_own_clear_error(standin: StandinServer, grid: Grid) -> None:
    """Earth Engine's 403 ("Permission '…' denied on resource …") names the permission and what to grant,
    and is not retried."""
    standin.inject("permission", -1)
    src = ee_source(standin)
    with pytest.raises(PermissionDeniedError) as exc:
        assemble(src, grid, 2018, 2023, "cosine")
    msg = str(exc.value)
    assert "earthengine.computations.create on projects/test-project" in msg
    assert "roles/earthengine.viewer" in msg and TOKEN not in msg
    assert src.stats.retries == 0


def test_permission_denied_on_get_info(standin: StandinServer) -> None:
    standin.inject("permission", 1, endpoint="value:compute")
    with pytest.raises(PermissionDeniedError, match=r"denied permission earthengine\.computations\.create"):
        ee_source(standin).years()


@pytest.mark.parametrize(
    "message, names",
    [
        (
            "Permission 'earthengine.computations.create' denied on resource 'projects/p1' (or it may not "
            "exist).",
            "denied permission earthengine.computations.create on projects/p1",
        ),
        (
            "Caller does not have required permission to use project p2. Grant the caller the "
            "roles/serviceusage.serviceUsageConsumer role, or a custom role with the "
            "serviceusage.services.use permission",
            "denied the use of project p2 (",
        ),
        ("Permission denied.", "denied permission (Permission denied.)"),
    ],
)
def test_google_403_texts_are_permission_errors(message: str, names: str) -> None:
    err = classify(ee.EEException(message))
    assert isinstance(err, PermissionDeniedError) and names in str(err)
    assert "roles/serviceusage.serviceUsageConsumer" in str(err)


@pytest.fixture
def refusing_proxy(monkeypatch: pytest.MonkeyPatch):
    """An HTTPS proxy on 127.0.0.1 that records the host of each CONNECT and refuses it: whatever the client
    asks of Google goes nowhere, and the test sees where it would have gone."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hosts: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_CONNECT(self) -> None:
            hosts.append(self.path)
            self.send_error(403, "refused by the test proxy")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    yield hosts
    server.shutdown()
    server.server_close()


def test_default_endpoint_is_high_volume_even_after_a_standin(
    standin: StandinServer, refusing_proxy: list[str]
) -> None:
    """With no url the source talks to the high-volume endpoint, also when the client was initialized on a
    stand-in before (ee.Initialize(url=None) would keep the stand-in's URL)."""
    assert ee_source(standin).years() == list(YEARS)
    before = len(standin.log)
    with pytest.raises(SourceError, match=f"cannot open Earth Engine at {HIGH_VOLUME_URL}"):
        EarthEngineSource(project="test-project", credentials=Credentials(TOKEN), client_retries=0)
    assert "earthengine-highvolume.googleapis.com:443" in refusing_proxy
    assert len(standin.log) == before, "the second source must not talk to the stand-in"
