"""A folder served over HTTP on 127.0.0.1 with byte ranges, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVE = """
import functools, sys
from http.server import ThreadingHTTPServer
from RangeHTTPServer import RangeRequestHandler
handler = functools.partial(RangeRequestHandler, directory=sys.argv[1])
handler.log_message = lambda *args: None
server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP with byte ranges (GDAL reads COGs by range) on 127.0.0.1.

    In its own process: rasterio holds the GIL while GDAL reads, so a server thread in the test's own
    process would never get to answer.
    """
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)
