"""The ``changecat`` process killed (SIGKILL), terminated (SIGTERM) or interrupted (SIGINT) by its PID at
each moment of making and committing a product, and runs of different configs at once into one catalog:
a plain re-run must then give a valid, complete catalog, with no good product lost and no leftovers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.agree import disagreement
from catalog.integrity import leftovers
from catalog.validate import validate_catalog
from generator.demo import prepare_demo
from tests.faults_helpers import (
    COLLECTION,
    REGIONS,
    REPO,
    SIGNALS,
    changecat,
    env,
    linked_items,
    signal_and_wait,
    start,
    start_held,
    write_config,
)

POINTS = ["computing", "staged", "item-written", "switched", "collection-written"]
"""Moments of a product's life: blocks being written, files staged, item JSON written beside them, item
folder switched into place (write lock held), collection rewritten (root catalog not yet)."""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    prepare_demo(out)
    return out / "demo" / "aef"


@pytest.fixture(scope="module")
def good_catalog(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """A finished catalog holding the 'forest' product, copied by each test."""
    work = tmp_path_factory.mktemp("good")
    config = write_config(work / "a.yaml", work / "catalog", mirror, ["forest"])
    result = changecat("run", config)
    assert result.returncode == 0, result.stderr
    return work / "catalog"


def item(catalog: Path, item_id: str) -> dict:
    return json.loads((catalog / COLLECTION / item_id / f"{item_id}.json").read_text())


def assert_whole(catalog: Path, item_id: str) -> None:
    """The product's item and files agree (old or new version, never a mix)."""
    folder = catalog / COLLECTION / item_id
    assert disagreement(folder, item(catalog, item_id), ["change", "thumbnail"]) is None


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_a_signal_at_any_moment_then_a_plain_rerun(
    tmp_path: Path, mirror: Path, good_catalog: Path, stac_schemas: Path, point: str, signame: str
) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(good_catalog, catalog)
    # The forest product is remade (its title changed) and a new one is added: the run is stopped while
    # it replaces the good forest product.
    config = write_config(
        tmp_path / "b.yaml",
        catalog,
        mirror,
        [{"id": "forest", "title": "Forest, retitled", "bbox": REGIONS["forest"]}, "north"],
    )
    proc = start_held(point, tmp_path / "held", "run", config)
    code, err = signal_and_wait(proc, SIGNALS[signame])
    if signame == "SIGKILL":
        assert code == -signal.SIGKILL
    else:
        assert code == 143, err
        assert "interrupted (SIGTERM)" in err
        assert leftovers(catalog) == []  # SIGTERM cleans up like Ctrl-C
    assert_whole(catalog, "forest_2017_2024_cosine")  # the good product survives, whole
    assert "forest_2017_2024_cosine" in linked_items(catalog)

    again = changecat("run", config)
    assert again.returncode == 0, again.stderr
    assert validate_catalog(catalog, stac_schemas) == []  # includes leftovers and unlinked folders
    assert leftovers(catalog) == []
    assert linked_items(catalog) == ["forest_2017_2024_cosine", "north_2017_2024_cosine"]
    assert item(catalog, "forest_2017_2024_cosine")["properties"]["title"].startswith("Forest, retitled")
    for item_id in linked_items(catalog):
        assert_whole(catalog, item_id)
    third = changecat("run", config)
    assert "0 made, 2 up to date, 0 failed" in third.stderr


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path: Path, mirror: Path, stac_schemas: Path) -> None:
    catalog = tmp_path / "catalog"
    config = write_config(tmp_path / "c.yaml", catalog, mirror, ["north"])
    proc = start_held("staged", tmp_path / "held", "run", config)
    assert any(p.name.startswith(".staging-") for p in (catalog / COLLECTION).iterdir())
    code, err = signal_and_wait(proc, signal.SIGINT)
    assert code == 130, err
    assert "interrupted (Ctrl-C)" in err
    assert leftovers(catalog) == []


def test_leftovers_of_a_live_run_are_kept_and_of_a_dead_one_removed(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    catalog = tmp_path / "catalog"
    held = write_config(tmp_path / "held.yaml", catalog, mirror, ["north"])
    other = write_config(tmp_path / "other.yaml", catalog, mirror, ["east"])
    proc = start_held("staged", tmp_path / "held", "run", held)
    staging = leftovers(catalog)
    assert len(staging) == 1
    try:
        result = changecat("run", other)  # another run meanwhile: the live run's staging is in use
        assert result.returncode == 0, result.stderr
        assert staging[0].is_dir()
        # validate does not call a staging folder of a live run stale
        assert [p for p in validate_catalog(catalog, stac_schemas) if ".staging-" in p] == []
    finally:
        code, _ = signal_and_wait(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    problems = validate_catalog(catalog, stac_schemas)
    assert any(".staging-north_2017_2024_cosine" in p and "left over" in p for p in problems), problems
    again = changecat("run", other)
    assert again.returncode == 0, again.stderr
    assert "removed 1 leftover(s) of an interrupted run" in again.stderr
    assert leftovers(catalog) == []
    assert validate_catalog(catalog, stac_schemas) == []


def test_a_waiting_run_names_the_lock_holder_and_recovers_when_it_dies(tmp_path: Path, mirror: Path) -> None:
    catalog = tmp_path / "catalog"
    first = write_config(tmp_path / "first.yaml", catalog, mirror, ["north"])
    second = write_config(tmp_path / "second.yaml", catalog, mirror, ["east"])
    holder = start_held("switched", tmp_path / "held", "run", first)  # holds the write lock
    waiter = start("run", second)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.communicate(timeout=8)  # it cannot commit while the lock is held
    finally:
        signal_and_wait(holder, signal.SIGKILL)  # the holder dies: the kernel drops its lock
    _, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, err
    assert f"is locked by changecat pid {holder.pid} on host" in err
    assert "waiting" in err
    rerun = changecat("run", first)
    assert rerun.returncode == 0, rerun.stderr
    assert linked_items(catalog) == ["east_2017_2024_cosine", "north_2017_2024_cosine"]


ROUNDS = 3


def test_three_concurrent_runs_of_different_configs_lose_nothing(
    tmp_path: Path, mirror: Path, stac_schemas: Path
) -> None:
    groups = [["forest", "north"], ["airfield", "east"], ["centre", "west"]]
    for n in range(ROUNDS):
        catalog = tmp_path / f"catalog{n}"
        configs = [write_config(tmp_path / f"{n}-{i}.yaml", catalog, mirror, g) for i, g in enumerate(groups)]
        procs = [start("run", c) for c in configs]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        expected = sorted(f"{r}_2017_2024_cosine" for g in groups for r in g)
        assert linked_items(catalog) == expected, f"round {n}"
        assert validate_catalog(catalog, stac_schemas) == [], f"round {n}"


def readonly_run(catalog: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``changecat run`` in a private mount namespace where ``catalog`` is a read-only bind mount (EROFS,
    as on a read-only volume; chmod would not stop root)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -m changecat run "$3"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(catalog), sys.executable, str(config)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_up_to_date_run_on_a_read_only_catalog(tmp_path: Path, mirror: Path, good_catalog: Path) -> None:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.decode().strip()}")
    catalog = tmp_path / "catalog"
    shutil.copytree(good_catalog, catalog)
    root = json.loads((catalog / "catalog.json").read_text())
    del root["changecat:version"]  # as written before the owner mark: not rewritten just to add it
    (catalog / "catalog.json").write_text(json.dumps(root))
    same = write_config(tmp_path / "a.yaml", catalog, mirror, ["forest"])
    before = {p: p.stat().st_mtime_ns for p in catalog.rglob("*")}
    result = readonly_run(catalog, same)
    assert result.returncode == 0, result.stderr
    assert "0 made, 1 up to date, 0 failed" in result.stderr
    more = write_config(tmp_path / "b.yaml", catalog, mirror, ["forest", "north", "east"])
    refused = readonly_run(catalog, more)
    assert refused.returncode == 2
    assert refused.stderr.count("is not writable") == 1, refused.stderr
    assert "Read-only file system" in refused.stderr
    assert "FAILED" not in refused.stderr and "jobs" not in refused.stderr  # said before any job started
    assert {p: p.stat().st_mtime_ns for p in catalog.rglob("*")} == before


def test_a_foreign_catalog_is_left_untouched(tmp_path: Path, mirror: Path, stac_schemas: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    foreign = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "someone-else",
        "description": "Another tool's catalog.",
        "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
    }
    (catalog / "catalog.json").write_text(json.dumps(foreign))
    before = (catalog / "catalog.json").read_bytes()
    config = write_config(tmp_path / "a.yaml", catalog, mirror, ["north"])
    refused = changecat("run", config)
    assert refused.returncode == 2
    assert "changecat did not write" in refused.stderr and "--adopt" in refused.stderr
    assert (catalog / "catalog.json").read_bytes() == before
    assert sorted(p.name for p in catalog.iterdir()) == ["catalog.json"]
    adopted = changecat("run", config, "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads((catalog / "catalog.json").read_text())["id"] == "faults"
    assert validate_catalog(catalog, stac_schemas) == []


def test_prune_command(tmp_path: Path, mirror: Path, good_catalog: Path, stac_schemas: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(good_catalog, catalog)
    config = write_config(tmp_path / "a.yaml", catalog, mirror, ["north"])
    dry = changecat("prune", config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {catalog.resolve() / COLLECTION / 'forest_2017_2024_cosine'}" in dry.stdout
    assert (catalog / COLLECTION / "forest_2017_2024_cosine").is_dir()
    done = changecat("run", config, "--prune")
    assert done.returncode == 0, done.stderr
    assert linked_items(catalog) == ["north_2017_2024_cosine"]
    assert not (catalog / COLLECTION / "forest_2017_2024_cosine").exists()
    assert validate_catalog(catalog, stac_schemas) == []
