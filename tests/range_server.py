"""A threaded HTTP/1.1 server on 127.0.0.1 serving a folder with single byte ranges, counting what it sends
and injecting faults at a set rate: 5xx statuses, connection resets, bodies cut short, stalls.

Range semantics follow RFC 9110 §14 (206 with Content-Range for one satisfiable range, 416 otherwise);
HEAD answers with the file's size. Faults are drawn from a seeded generator, so a run is reproducible for
a given order of requests. Used by the tests and by ``benchmarks/bench_aef.py`` (to count requests/bytes).
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
FAULTS = ("status", "reset", "cut", "stall")


@dataclass
class Faults:
    """Rates (0..1) of each fault per GET; ``stall_s`` is how long a stalled response hangs."""

    status: float = 0.0
    reset: float = 0.0
    cut: float = 0.0
    stall: float = 0.0
    stall_s: float = 3600.0
    seed: int = 0
    only: str = ""  # faults only on paths containing this (e.g. ".tiff": the index is served cleanly)
    first: tuple[str, ...] = ()  # faults given to the first requests in this order, then drawn at the rates
    # Chooses a fault from the request itself (path, first byte, end exclusive), before the rates are drawn:
    # e.g. to cut the one response that carries part of a file's tile offsets.
    when: Callable[[str, int, int], str | None] | None = None


@dataclass
class Counters:
    requests: int = 0
    faultable: int = 0
    bytes_sent: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    ranges: list[tuple[str, int, int]] = field(default_factory=list)  # (path, first byte, end) of bodies sent
    gets: list[tuple[str, int, int, str]] = field(default_factory=list)  # (path, first, end, fault or "")
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(root: Path, faults: Faults, counters: Counters, stop: threading.Event) -> type:
    rng = random.Random(faults.seed)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> Path | None:
            path = (root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
            return path if path.is_file() and root in path.parents else None

        def do_HEAD(self) -> None:
            path = self._file()
            self.send_response(200 if path else 404)
            self.send_header("Content-Length", str(path.stat().st_size if path else 0))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def _draw(self) -> str | None:
            with counters.lock:
                counters.requests += 1
                if faults.only not in self.path:
                    return None
                counters.faultable += 1
                if counters.faultable <= len(faults.first):
                    name = faults.first[counters.faultable - 1]
                    counters.faults[name] += 1
                    return name
                x = rng.random()
                for name in FAULTS:
                    rate = getattr(faults, name)
                    if x < rate:
                        counters.faults[name] += 1
                        return name
                    x -= rate
            return None

        def do_GET(self) -> None:
            fault = self._draw()
            path = self._file()
            if path is None:
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end, status = 0, size - 1, 200
            match = RANGE.match(self.headers.get("Range", ""))
            if match and (match[1] or match[2]):
                if match[1]:
                    start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
                else:
                    start, end = max(0, size - int(match[2])), size - 1
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            chosen = faults.when(urlsplit(self.path).path, start, end + 1) if faults.when else None
            if chosen:
                fault = chosen
                with counters.lock:
                    counters.faults[chosen] += 1
            with counters.lock:
                counters.gets.append((urlsplit(self.path).path, start, end + 1, fault or ""))
            if fault == "status":
                self.send_error(503, "injected")
                return
            if fault == "reset":  # RST instead of a response (SO_LINGER 0 then close)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            with path.open("rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if fault == "stall":
                stop.wait(faults.stall_s)
                self.close_connection = True
                return
            if fault == "cut":
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)
            with counters.lock:
                counters.bytes_sent += len(body)
                counters.ranges.append((urlsplit(self.path).path, start, start + len(body)))

    return Handler


@contextmanager
def serve(root: Path, faults: Faults | None = None) -> Iterator[tuple[str, Counters]]:
    """Serve ``root`` on 127.0.0.1; yields (base URL with a trailing slash, counters)."""
    counters, stop = Counters(), threading.Event()
    handler = _handler(Path(root).resolve(), faults or Faults(), counters, stop)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", counters
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        time.sleep(0)
