"""The command line as a user runs it: a real process, exit codes, messages and tables."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
import yaml
from shapely.geometry import shape

from tests.http_helpers import served

COLLECTION = "google-satellite-embedding-v1-annual"


def changecat(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a process with a minimal environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "changecat", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or Path(__file__).resolve().parents[1],
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_GCE_CHECK": "True", **(env or {})},
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("cli")
    return out, changecat("demo", "--out", out)


def test_demo_makes_a_catalog_and_prints_the_summary(demo_out) -> None:
    out, result = demo_out
    assert result.returncode == 0, result.stderr
    assert (out / "catalog" / "catalog.json").is_file()
    assert "12 made, 0 up to date, 0 failed" in result.stderr
    for item in ("demo-town_2017_2024_cosine", "forest_2020_2024_angle", "airfield_2017_2024_cosine"):
        assert item in result.stdout
    assert "2017→2024" in result.stdout


def test_demo_again_is_up_to_date(demo_out) -> None:
    out, _ = demo_out
    again = changecat("demo", "--out", out)
    assert again.returncode == 0, again.stderr
    assert "0 made, 12 up to date, 0 failed" in again.stderr


def test_validate_and_info(demo_out, stac_schemas: Path) -> None:
    out, _ = demo_out
    valid = changecat("validate", out / "catalog", "--schemas", stac_schemas)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "valid" in valid.stderr
    info = changecat("info", out / "catalog")
    assert info.returncode == 0
    assert "forest_2017_2024_cosine" in info.stdout


def test_validate_reports_each_problem_and_exits_1(demo_out, stac_schemas: Path, tmp_path: Path) -> None:
    out, _ = demo_out
    broken = tmp_path / "catalog"
    shutil.copytree(out / "catalog", broken)
    item = broken / COLLECTION / "forest_2017_2024_cosine" / "forest_2017_2024_cosine.json"
    doc = json.loads(item.read_text())
    doc["properties"]["change:from_year"] = "2017"
    item.write_text(json.dumps(doc))
    (broken / COLLECTION / "airfield_2020_2024_angle" / "change.tif").write_bytes(b"not a tiff")
    result = changecat("validate", broken, "--schemas", stac_schemas)
    assert result.returncode == 1
    assert "forest_2017_2024_cosine" in result.stdout
    assert "airfield_2020_2024_angle" in result.stdout


def test_bad_config_is_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"id": "x"},
                "source": {"kind": "aef", "root": "."},
                "pairs": [[2024, 2017]],
                "regions": [{"id": "Bad", "bbox": [0, 0, 1, 1]}],
            }
        )
    )
    result = changecat("run", config)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "regions[0].id: 'Bad' is not a valid id" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_problems_and_years_the_source_lacks_are_reported_together(demo_out, tmp_path: Path) -> None:
    """A bad id, an unknown method and a year the source lacks: one message naming all three (the year
    used to be reported only once the other problems were fixed)."""
    out, _ = demo_out
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"id": "x", "output": "catalog"},
                "source": {"kind": "aef", "root": str(out / "demo" / "aef")},
                "pairs": [[2017, 2031]],
                "methods": ["cosine", "euclid"],
                "regions": [{"id": "Bad", "bbox": [11.985, 52.41, 12.015, 52.43]}],
            }
        )
    )
    result = changecat("run", config)
    assert result.returncode == 2, result.stderr
    assert "regions[0].id: 'Bad' is not a valid id" in result.stderr
    assert "unknown method 'euclid'" in result.stderr
    assert "the source has no data for year(s) 2031; available years: 2017, 2020, 2024" in result.stderr


def test_a_failed_job_makes_exit_1_with_a_summary(demo_out, tmp_path: Path) -> None:
    out, _ = demo_out
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": {"id": "partial", "output": "catalog"},
                "source": {"kind": "aef", "root": str(out / "demo" / "aef")},
                "pairs": [[2017, 2024]],
                "regions": [
                    {"id": "faraway", "bbox": [30.0, 10.0, 30.1, 10.1]},
                    {"id": "airfield", "bbox": [11.985, 52.41, 12.015, 52.43]},
                ],
            }
        )
    )
    result = changecat("run", config)
    assert result.returncode == 1
    assert "1 made, 0 up to date, 1 failed" in result.stderr
    assert "failed faraway_2017_2024_cosine: region 'faraway' has no data" in result.stderr
    assert (tmp_path / "catalog" / COLLECTION / "airfield_2017_2024_cosine" / "change.tif").is_file()


@pytest.mark.parametrize("command", ["run", "demo", "validate", "info"])
def test_help_explains_each_command(command: str) -> None:
    result = changecat(command, "--help")
    assert result.returncode == 0
    assert "Usage: python -m changecat" in result.stdout
    assert len(result.stdout.splitlines()) > 4


MILLION_VERTEX_EXTRA_RSS = 400 * 1024 * 1024
"""Peak memory the million-vertex region may add to the same run with a bbox region: its 40 MB of GeoJSON
parsed into Python lists adds about 330 MB (the old code added about 460 MB and wrote a 66 MB item; the
issue saw 2.8 GB). Relative to a baseline run, so the bound does not move with what the run imports."""
MAX_ITEM_JSON_BYTES = 150_000
"""An item with its statistics, histogram and a footprint of at most 1000 vertices (the old item: 79 MB)."""

REPORT_PEAK_RSS = """
import atexit, resource, sys
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
atexit.register(lambda: print("peak-rss-kb", peak(), file=sys.stderr))
from changecat.cli import main
sys.argv[0] = "changecat"
main()
"""


def _peak_rss_of_run(config: Path) -> int:
    """Peak RSS in bytes of ``changecat run config`` in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", REPORT_PEAK_RSS, "run", str(config)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stderr.split("peak-rss-kb")[1].split()[0]) * 1024


def test_million_vertex_region_runs_within_a_memory_bound_and_makes_a_small_item(
    demo_out, tmp_path: Path
) -> None:
    out, _ = demo_out
    t = np.linspace(0, 2 * np.pi, 1_000_000, endpoint=False)
    r = 0.02 * (1 + 0.05 * np.sin(40 * t))
    ring = np.column_stack([12.0 + 1.6 * r * np.cos(t), 52.40 + r * np.sin(t)]).round(8).tolist()
    exact = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    (tmp_path / "coast.geojson").write_text(json.dumps({"type": "Feature", "geometry": exact}))
    bbox = {"type": "Feature", "geometry": shapely.geometry.mapping(shapely.box(*shape(exact).bounds))}
    (tmp_path / "box.geojson").write_text(json.dumps(bbox))
    configs = {}
    for name in ("coast", "box"):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(
            yaml.safe_dump(
                {
                    "catalog": {"id": name, "output": f"catalog-{name}"},
                    "source": {"kind": "aef", "root": str(out / "demo" / "aef")},
                    "pairs": [[2017, 2024]],
                    "regions": [{"id": name, "file": f"{name}.geojson"}],
                }
            )
        )
    peak, baseline = _peak_rss_of_run(configs["coast"]), _peak_rss_of_run(configs["box"])
    print(f"million-vertex run: peak RSS {peak / 2**20:.0f} MiB, its bbox's run {baseline / 2**20:.0f} MiB")
    assert peak - baseline < MILLION_VERTEX_EXTRA_RSS
    item_path = (
        tmp_path / "catalog-coast" / COLLECTION / "coast_2017_2024_cosine" / "coast_2017_2024_cosine.json"
    )
    assert item_path.stat().st_size < MAX_ITEM_JSON_BYTES
    item = json.loads(item_path.read_text())
    geometry = shape(item["geometry"])
    assert shapely.get_num_coordinates(geometry) <= 1000
    assert geometry.is_valid and geometry.covers(shape(exact))
    assert geometry.area < 1.05 * shape(exact).area  # a footprint, not a box


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_validate_without_schemas_offline_is_one_clear_line(demo_out) -> None:
    out, _ = demo_out
    # Every fetch goes to a proxy that refuses connections: offline, deterministically and at once.
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {name: proxy for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
    result = changecat("validate", out / "catalog", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[:3000]
    assert lines[0].startswith(
        "error: cannot fetch the STAC extension schema https://stac-extensions.github.io/"
    )
    assert "to validate offline, pass --schemas DIR" in lines[0]


def test_info_and_validate_take_a_folder_its_catalog_json_or_a_url(demo_out, stac_schemas: Path) -> None:
    out, _ = demo_out
    env = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with served(out) as url:
        for where in (
            out / "catalog",
            out / "catalog" / "catalog.json",
            f"{url}catalog",
            f"{url}catalog/catalog.json",
        ):
            info = changecat("info", where, env=env)
            assert info.returncode == 0, (where, info.stderr)
            assert "forest_2017_2024_cosine" in info.stdout and "2017→2024" in info.stdout
            valid = changecat("validate", where, "--schemas", stac_schemas, env=env)
            assert valid.returncode == 0, (where, valid.stdout + valid.stderr)
            assert f"valid: {where}" in valid.stderr


def test_info_on_a_folder_without_a_catalog_exits_non_zero(tmp_path: Path) -> None:
    result = changecat("info", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {tmp_path}: no catalog.json in this folder, so it is not a catalog"
    )
    missing = changecat("info", tmp_path / "nothing")
    assert missing.returncode == 2 and "no such folder or file" in missing.stderr
