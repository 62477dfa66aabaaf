"""Shared by the cluster tests: a small config on the demo mirror, and the comparison of two catalogs
(the same pixels in every COG, the same item properties and assets, timestamps aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml

from generator.demo import prepare_demo

TIMESTAMPS = {"created", "updated", "processing:datetime"}
"""Item properties that say when a product was made: the only ones a cluster run may change."""
REGIONS = [
    {"id": "town", "bbox": [11.94, 52.37, 12.06, 52.43]},  # 820×670 px across UTM 32N/33N
    {
        "id": "fire",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[11.95, 52.372], [11.98, 52.372], [11.965, 52.392], [11.95, 52.372]]],
        },
    },
]


def demo_mirror(out: Path) -> Path:
    prepare_demo(out)
    return out / "demo" / "aef"


def write_config(
    folder: Path, source: dict[str, Any], pairs: list | None = None, methods: list | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "catalog": {"id": "cluster-test", "output": "catalog"},
        "source": source,
        "pairs": pairs or [[2017, 2024], [2020, 2024]],
        "methods": methods or ["cosine"],
        "regions": REGIONS,
    }
    path = folder / "regions.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def item_files(catalog: Path) -> dict[str, Path]:
    return {p.stem: p for p in catalog.glob("*/*/*.json") if p.parent.name == p.stem}


def normalized(item: dict, replace: dict[str, str]) -> dict:
    """The item without its timestamps, with ``replace``'s strings (e.g. the source's root) substituted."""
    text = json.dumps(item, sort_keys=True)
    for old, new in replace.items():
        text = text.replace(old, new)
    out = json.loads(text)
    out["properties"] = {k: v for k, v in out["properties"].items() if k not in TIMESTAMPS}
    return out


def assert_same_products(
    want: Path, got: Path, replace: dict[str, str] | None = None, ignore: tuple[str, ...] = ()
) -> int:
    """Every item of ``want`` is in ``got`` with the same pixels, properties and assets (checksums
    included), timestamps aside; ``ignore``: properties that legitimately differ. Returns the count."""
    a, b = item_files(want), item_files(got)
    assert a.keys() == b.keys() and a
    for item_id, path in a.items():
        wa = normalized(json.loads(path.read_text()), replace or {})
        wb = normalized(json.loads(b[item_id].read_text()), replace or {})
        for key in ignore:
            wa["properties"].pop(key, None)
            wb["properties"].pop(key, None)
        diff = {
            k
            for k in wa["properties"].keys() | wb["properties"].keys()
            if wa["properties"].get(k) != wb["properties"].get(k)
        }
        assert not diff, (item_id, {k: (wa["properties"].get(k), wb["properties"].get(k)) for k in diff})
        assert wb["assets"] == wa["assets"], item_id
        with (
            rasterio.open(path.parent / "change.tif") as x,
            rasterio.open(b[item_id].parent / "change.tif") as y,
        ):
            assert (x.crs, x.transform, x.shape) == (y.crs, y.transform, y.shape)
            np.testing.assert_array_equal(x.read(), y.read(), err_msg=item_id)
    return len(a)


def dask_command(*args: str) -> list[str]:
    """The ``dask`` command of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask")), *args]


class ProcessCluster:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, started as users start them."""

    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.folder = folder
        self.file = folder / "scheduler.json"
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.procs = [
            subprocess.Popen(
                dask_command(
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(self.file),
                ),
                stdout=subprocess.DEVNULL,
                stderr=(folder / "scheduler.log").open("w"),
                env=env,
            )
        ]
        self.address = self._wait_address()
        for i in range(workers):
            self.procs.append(
                subprocess.Popen(
                    dask_command(
                        "worker", self.address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=(folder / f"worker{i}.log").open("w"),
                    env=env,
                )
            )

    def _wait_address(self, timeout_s: float = 60) -> str:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.file.is_file():
                try:
                    return json.loads(self.file.read_text())["address"]
                except (ValueError, KeyError):
                    pass
            if self.procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {(self.folder / 'scheduler.log').read_text()}")
            time.sleep(0.1)
        raise RuntimeError("dask scheduler did not start")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
