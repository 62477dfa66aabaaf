"""The ``changecat`` process under faults: started as a user would, held at a named moment (the pipeline's
test hook, ``catalog.testhook``), signalled by its PID; small configs on the demo mirror."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from catalog.testhook import HOLD_ENV

REPO = Path(__file__).resolve().parents[1]
COLLECTION = "google-satellite-embedding-v1-annual"
HOLD_TIMEOUT_S = 180
"""How long a test waits for the process to reach its hold point (2 shared cores, cold imports)."""

REGIONS = {  # small boxes inside the demo mirror (11.93-12.07 E, 52.36-52.44 N), a few thousand px each
    "forest": [11.945, 52.37, 11.985, 52.395],
    "airfield": [11.985, 52.41, 12.015, 52.43],
    "north": [11.95, 52.415, 11.97, 52.43],
    "east": [12.03, 52.37, 12.05, 52.385],
    "centre": [12.0, 52.385, 12.02, 52.40],
    "west": [11.935, 52.40, 11.95, 52.41],
}


def write_config(
    path: Path, catalog: Path, mirror: Path, regions: list[str | dict[str, Any]], **changes: Any
) -> Path:
    """A regions config of ``regions`` (names from REGIONS, or full region entries) into ``catalog``."""
    data: dict[str, Any] = {
        "catalog": {"id": "faults", "title": "Faults", "output": str(catalog)},
        "source": {"kind": "aef", "root": str(mirror)},
        "pairs": [[2017, 2024]],
        "methods": ["cosine"],
        "regions": [r if isinstance(r, dict) else {"id": r, "bbox": REGIONS[r]} for r in regions],
    }
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def env(hold: str | None = None) -> dict[str, str]:
    out = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_GCE_CHECK": "True"}
    if hold:
        out[HOLD_ENV] = hold
    return out


def start(*args: str | Path, hold: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "changecat", *map(str, args)],
        cwd=REPO,
        env=env(hold),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A background job of a non-interactive shell (e.g. `nohup make test &`) starts with SIGINT ignored,
        # and Python then installs no Ctrl-C handler: give the child the default, as an interactive run has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def changecat(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "changecat", *map(str, args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_held(point: str, marker: Path, *args: str | Path) -> subprocess.Popen[str]:
    """Start ``changecat ARGS`` and return once it sits at ``point`` (it has written ``marker``)."""
    proc = start(*args, hold=f"{point}:{marker}")
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not marker.is_file():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"changecat ended (rc {proc.returncode}) before {point}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"changecat did not reach {point} within {HOLD_TIMEOUT_S} s")
        time.sleep(0.05)
    assert int(marker.read_text()) == proc.pid
    return proc


def signal_and_wait(proc: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    """Send ``signum`` to the process by its PID; its exit code and stderr."""
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def linked_items(catalog: Path, collection: str = COLLECTION) -> list[str]:
    import json

    coll = json.loads((catalog / collection / "collection.json").read_text())
    return sorted(Path(link["href"]).parent.name for link in coll["links"] if link["rel"] == "item")


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
