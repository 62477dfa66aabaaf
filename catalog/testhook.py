"""A pause point for crash tests: ``CHANGECAT_TEST_HOLD=<point>:<file>`` makes the process, on reaching
``<point>``, write its pid to ``<file>`` and sleep until a signal ends it. Unset (always, outside tests)
it costs one dictionary lookup. The points are named where ``hold`` is called."""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "CHANGECAT_TEST_HOLD"
HOLD_SLEEP_S = 0.05


def hold(point: str) -> None:
    """Pause here forever if the test hook names this point."""
    spec = os.environ.get(HOLD_ENV)
    if not spec or not spec.startswith(point + ":"):
        return
    marker = Path(spec[len(point) + 1 :])
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(HOLD_SLEEP_S)
