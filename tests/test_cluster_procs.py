"""A separately started ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, as on a real
cluster: the CLI runs on it, and a worker killed by PID in the middle of a run has its tasks rerun
elsewhere with the products still equal to the local run's."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from distributed import Client

from changecat.pipeline import SilentReporter, run
from generator.config import load_config
from generator.plan import Job
from tests.cluster_helpers import ProcessCluster, assert_same_products, demo_mirror, write_config
from tests.test_cli import changecat


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_mirror(tmp_path_factory.mktemp("procs_mirror"))


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> str:
    procs = ProcessCluster(tmp_path_factory.mktemp("procs"), workers=2)
    try:
        with Client(procs.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield procs.address
    finally:
        procs.stop()
    assert all(p.poll() is not None for p in procs.procs), "every dask process ended"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    config = write_config(tmp_path_factory.mktemp("local"), {"kind": "aef", "root": str(mirror)})
    assert [o.status for o in run(load_config(config))] == ["done"] * 4
    return config.parent / "catalog"


def test_cli_on_a_separately_started_scheduler(
    tmp_path: Path, mirror: Path, scheduler: str, reference: Path
) -> None:
    config = write_config(tmp_path, {"kind": "aef", "root": str(mirror)})
    result = changecat("run", config, "--scheduler", scheduler)
    assert result.returncode == 0, result.stderr
    assert f"running on the dask cluster at {scheduler}: 2 worker(s), 2 thread(s)" in result.stderr
    assert "4 made, 0 up to date, 0 failed" in result.stderr
    assert assert_same_products(reference, tmp_path / "catalog") == 4


class KillOnFirstBlock(SilentReporter):
    """Kills one worker process (SIGKILL, by PID) when the first block of the run has been written: the
    other units of the run are then running, queued or finished on the workers."""

    def __init__(self, scheduler: str) -> None:
        with Client(scheduler) as client:
            self.pids = client.run(os.getpid)  # worker address → pid
        self.victim: int | None = None

    def block_done(self, job: Job, detail: str = "") -> None:
        if self.victim is None:
            self.victim = sorted(self.pids.values())[0]
            os.kill(self.victim, signal.SIGKILL)


def test_a_worker_killed_mid_run_still_gives_correct_products(
    tmp_path: Path, mirror: Path, scheduler: str, reference: Path
) -> None:
    config = write_config(tmp_path, {"kind": "aef", "root": str(mirror)})
    reporter = KillOnFirstBlock(scheduler)
    outcomes = run(load_config(config), reporter, scheduler=scheduler)
    assert reporter.victim is not None
    assert [o.status for o in outcomes] == ["done"] * 4, [o.error for o in outcomes]
    assert assert_same_products(reference, tmp_path / "catalog") == 4
    with Client(scheduler) as client:
        client.wait_for_workers(2, timeout=120)  # the nanny started a new worker process
        assert reporter.victim not in client.run(os.getpid).values()
