"""`changecat run --scheduler` on a LocalCluster of 2 worker processes: the AEF source (folder and HTTP)
and the Earth Engine stand-in give the same products as a local run; bad addresses, unreachable
schedulers, sources a worker cannot open and failing tasks give clear errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from catalog.validate import validate_catalog
from changecat.pipeline import JobOutcome, SilentReporter, make_product, plan_jobs, run
from changecat.run_executor import attach
from generator import cluster
from generator.cluster import DaskExecutor, Secret, parse_scheduler
from generator.config import load_config
from generator.errors import ConfigError, SourceError
from generator.sources.aef import AefSource
from generator.sources.earthengine import EarthEngineSource
from tests.cluster_helpers import assert_same_products, demo_mirror, write_config
from tests.ee_standin import StandinServer
from tests.range_server import serve
from tests.test_cli import changecat


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_mirror(tmp_path_factory.mktemp("cluster_mirror"))


@pytest.fixture(scope="module")
def scheduler() -> str:
    """One LocalCluster of 2 worker processes (1 thread each) for the whole module."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as lc:
        yield lc.scheduler_address


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """The local (threaded) run of the config every cluster run is compared with."""
    config = write_config(tmp_path_factory.mktemp("local"), {"kind": "aef", "root": str(mirror)})
    assert [o.status for o in run(load_config(config))] == ["done"] * 4
    return config.parent / "catalog"


def test_folder_source_on_the_cluster_equals_the_local_run(
    tmp_path: Path, mirror: Path, scheduler: str, reference: Path, stac_schemas: Path
) -> None:
    config = write_config(tmp_path, {"kind": "aef", "root": str(mirror)})
    notes: list[str] = []
    tasks_when_written: list[int] = []

    class Watch(SilentReporter):
        def note(self, message: str) -> None:
            notes.append(message)

        def job_finished(self, outcome: JobOutcome) -> None:
            # The job is written and committed: the next job's units should already be on the cluster.
            with Client(scheduler) as other:
                tasks_when_written.append(
                    other.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
                )

    outcomes = run(load_config(config), Watch(), scheduler=scheduler)
    assert [o.status for o in outcomes] == ["done"] * 4, [o.error for o in outcomes]
    assert any("2 worker(s)" in n and scheduler in n for n in notes), notes
    assert all(n > 0 for n in tasks_when_written[:-1]), tasks_when_written  # jobs overlap
    assert assert_same_products(reference, tmp_path / "catalog") == 4
    assert validate_catalog(tmp_path / "catalog", stac_schemas) == []


def test_http_source_on_the_cluster_equals_the_local_run(
    tmp_path: Path, mirror: Path, scheduler: str, reference: Path
) -> None:
    with serve(mirror) as (url, counters):
        config = write_config(tmp_path, {"kind": "aef", "root": url})
        outcomes = run(load_config(config), scheduler=scheduler)
    assert [o.status for o in outcomes] == ["done"] * 4, [o.error for o in outcomes]
    assert counters.requests > 0
    # Same pixels, statistics, hotspots and checksums; only where the data came from differs.
    ignore = ("change:fingerprint", "change:dataset_version", "processing:lineage")
    replace = {url.rstrip("/"): "ROOT", str(mirror): "ROOT"}
    assert assert_same_products(reference, tmp_path / "catalog", replace, ignore) == 4


def test_cli_local_cluster(tmp_path: Path, mirror: Path, reference: Path) -> None:
    config = write_config(tmp_path, {"kind": "aef", "root": str(mirror)})
    result = changecat("run", config, "--scheduler", "local:2")
    assert result.returncode == 0, result.stderr
    assert "4 made, 0 up to date, 0 failed" in result.stderr
    assert "running on the dask cluster at tcp://127.0.0.1:" in result.stderr
    assert assert_same_products(reference, tmp_path / "catalog") == 4


@pytest.mark.parametrize("address", ["localhost:8786", "local:0", "local:x", "tcp://", "http://h:1", "local"])
def test_bad_scheduler_address_says_what_is_valid(address: str) -> None:
    with pytest.raises(ConfigError, match=r"expected tcp://HOST:PORT .* or local:N"):
        parse_scheduler(address)


def test_cli_refuses_a_bad_address_before_reading_anything(tmp_path: Path) -> None:
    result = changecat("run", tmp_path / "missing.yaml", "--scheduler", "10.0.0.1:8786")
    assert result.returncode == 2
    assert "Invalid value for '--scheduler'" in result.stderr and "tcp://HOST:PORT" in result.stderr


def test_unreachable_scheduler_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(
        SourceError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0\.1:9 within 2 s"
    ):
        DaskExecutor("tcp://127.0.0.1:9")


def test_a_worker_that_cannot_open_the_source_is_one_clear_error(
    tmp_path: Path, mirror: Path, scheduler: str
) -> None:
    """The folder is there for this process but not for the workers (here: gone after it was opened)."""
    root = tmp_path / "only-here"
    root.mkdir()
    shutil.copy(mirror / "aef_index.parquet", root)
    source = AefSource(str(root))
    shutil.rmtree(root)
    with pytest.raises(SourceError) as err:
        attach(source, scheduler, lambda message: None)
    text = str(err.value)
    assert text.startswith("worker tcp://127.0.0.1:") and f"cannot open the AEF source {root}" in text
    assert "1 other worker(s) failed too" in text
    assert source.executor is None


def test_a_failing_task_fails_its_job_and_the_others_go_on(
    tmp_path: Path, mirror: Path, scheduler: str
) -> None:
    copy = tmp_path / "aef"
    shutil.copytree(mirror, copy)
    # A 2017 tile of the town region's east part (not the first of its zone, which sets the block lattice).
    broken = next((copy / "2017" / "33N").glob("*-0000000512-0000000256.tiff"))
    broken.write_bytes(b"not a tiff")
    config = write_config(tmp_path / "run", {"kind": "aef", "root": str(copy)})
    outcomes = {o.job.item_id: o for o in run(load_config(config), scheduler=scheduler)}
    assert outcomes["town_2017_2024_cosine"].status == "failed"
    error = outcomes["town_2017_2024_cosine"].error or ""
    assert error.startswith("worker tcp://127.0.0.1:") and broken.name in error
    assert {k: o.status for k, o in outcomes.items() if k != "town_2017_2024_cosine"} == dict.fromkeys(
        ["town_2020_2024_cosine", "fire_2017_2024_cosine", "fire_2020_2024_cosine"], "done"
    )


@pytest.fixture(scope="module")
def standin(mirror: Path):
    with StandinServer(mirror) as server:
        yield server


def test_earthengine_on_the_cluster_equals_the_local_run(
    tmp_path: Path, standin: StandinServer, scheduler: str
) -> None:
    source = {"kind": "earthengine", "project": "test-project", "url": standin.url, "s2_context": True}
    local = write_config(tmp_path / "local", source, pairs=[[2017, 2024]])
    on_cluster = write_config(tmp_path / "cluster", source, pairs=[[2017, 2024]])
    assert [o.status for o in run(load_config(local))] == ["done"] * 2
    before = len(standin.entries())
    outcomes = run(load_config(on_cluster), scheduler=scheduler)
    assert [o.status for o in outcomes] == ["done"] * 2, [o.error for o in outcomes]
    assert len(standin.entries()) > before, "the workers downloaded the tiles"
    # The local run yields tiles as they finish, so its streaming mean may differ in the last bits.
    assert assert_same_products(local.parent / "catalog", on_cluster.parent / "catalog", ignore=()) == 2


def test_earthengine_concurrency_is_held_across_workers(
    tmp_path: Path, standin: StandinServer, scheduler: str
) -> None:
    """max_concurrency 1 with 2 workers: never two computePixels at once (a distributed semaphore)."""
    config = load_config(
        write_config(tmp_path, {"kind": "earthengine", "project": "test-project", "url": standin.url})
    )
    source = EarthEngineSource(
        "test-project", url=standin.url, max_concurrency=1, tile_size=256, min_tile_size=128
    )
    executor = attach(source, scheduler, lambda message: None)
    try:
        job = plan_jobs(config, source)[0]  # town: 820×670 px, 12 tiles of 256 px
        before = len(standin.entries())
        standin.max_in_flight = 0
        make_product(job, source, tmp_path / "out")
        # 12 tiles, and one embedding-picture request per year (made by this process, not a worker)
        assert len(standin.entries()) - before == 12 + 2
        assert standin.max_in_flight == 1
        assert source.request_count() == 12 + 2
    finally:
        source.close()
        executor.close()


def test_credentials_never_show_in_a_repr_and_reach_the_worker() -> None:
    from google.oauth2.credentials import Credentials

    secret = Secret(Credentials(token="ya29.secret-token"))
    assert "secret-token" not in repr(secret) and "secret-token" not in repr([secret])
    assert pickle.loads(pickle.dumps(secret)).value.token == "ya29.secret-token"


def test_results_stay_bounded_in_flight(scheduler: str) -> None:
    """At most ``ahead`` tasks are submitted and not yet consumed, whatever the number of units."""
    executor = DaskExecutor(scheduler)
    try:
        stream = executor.map(abs, range(-50, 0), ahead=3)
        seen = []
        with Client(scheduler) as other:
            for value in stream:
                seen.append(value)
                assert len(other.who_has()) <= 3
        assert seen == list(range(50, 0, -1))
    finally:
        executor.close()
