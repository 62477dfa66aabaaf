"""Reading AEF files for one job: datasets opened once and shared by the read threads, remote reads retried
with their cause named, GDAL's memory of a failed read forgotten before retrying.

GDAL retries HTTP 429/5xx itself (GDAL_HTTP_MAX_RETRY) but not a body cut short, and its /vsicurl/ cache
then keeps the short data: every later read of those bytes fails the same way, even from a new handle
(seen with GDAL 3.10). So on a failed remote read the dataset is dropped, GDAL's cache of that URL is
cleared (``VSICurlPartialClearCache``) and the read is tried again, whole, then band by band.
GDAL reports a failed remote open as "not recognized as being in a supported file format": the cause
is found by asking the server ourselves (``probe``) and named in the error instead.

GDAL can also fail without saying so: when a response carrying part of a file's tile index (the
TileOffsets/TileByteCounts arrays, which GDAL fetches in 16 KiB pieces as it needs them) is cut short,
GDAL 3.10 takes the missing entries as zero, i.e. as tiles that were never written, and returns those
bands' tiles as nodata with no error (``tests/test_aef_remote.py``: 14 % of its region's pixels wrong
after one cut response). An AEF file stores nodata in all 64 bands at once, so a read in which some bands are
nodata everywhere while others hold data cannot be right: it is treated as a failed read (``check_bands``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import http.client
import queue
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.session import DummySession
from rasterio.windows import Window

from generator.errors import SourceError
from generator.kernel import empty_bands
from generator.sources.remote import gdal_path, http_timeouts, scheme_of
from generator.urls import public_href, redact

READ_ATTEMPTS = 4
"""Failed attempts allowed per read of a file (open included) before the job fails: enough for faults at a
few percent of requests, few enough that a dead or stalled server ends the job within minutes."""
RETRY_DELAY_S = 0.5
"""First pause before retrying a failed read; doubled at each retry."""

T = TypeVar("T")


class _Retry(Exception):
    """A remote read failed in a way worth retrying; the message says why."""


class IncompleteRead(Exception):
    """A read returned some bands without any data where the others hold data (see the module's doc)."""


def check_bands(stack: np.ndarray) -> np.ndarray:
    """``stack`` (bands, rows, cols of AEF int8) as read, or ``IncompleteRead`` naming the bands that are
    nodata at every pixel while other bands hold data."""
    empty = empty_bands(stack)
    if empty.any() and not empty.all():
        bands = np.flatnonzero(empty)
        raise IncompleteRead(
            f"{len(bands)} of its {len(empty)} bands (from band {bands[0] + 1}) came back without data where "
            "the others hold data (a tile index fetched incompletely?)"
        )
    return stack


@dataclass(frozen=True)
class FileFacts:
    """What the planning needs from a file's header."""

    transform: Affine
    crs: str
    width: int
    height: int
    count: int
    block_shape: tuple[int, int]  # (rows, cols) of the first band's blocks


class Reader:
    """The files of one job, opened on first use and kept open until ``close``. Thread-safe: each thread
    checks a dataset out (rasterio datasets must not be read by two threads at once)."""

    def __init__(self, options: dict[str, str | int]) -> None:
        self._options = options
        self._free: dict[str, list[rasterio.DatasetReader]] = {}
        self._facts: dict[str, FileFacts] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def env(self) -> rasterio.Env:
        return rasterio.Env(session=DummySession(), **self._options)

    def facts(self, href: str) -> FileFacts:
        """The file's header facts (the file is opened once, then kept in the pool)."""
        if href not in self._facts:
            self._facts[href] = self.call(href, _facts_of)
        return self._facts[href]

    def read(self, href: str, window: Window) -> np.ndarray:
        """All bands of a window of the file, (bands, rows, cols). One multi-band read (GDAL fetches the
        blocks of all bands in parallel ranges); after a remote failure, band by band, each band with
        ``READ_ATTEMPTS`` attempts (a band that fails them all fails the read). Bands that come back
        without data while others hold data (``check_bands``) are read again, from newly opened datasets,
        up to ``READ_ATTEMPTS`` times."""
        try:
            return self._attempt(href, lambda src: check_bands(src.read(window=window)), first=True)
        except _Retry:
            pass
        facts = self.facts(href)
        out = np.empty((facts.count, int(window.height), int(window.width)), dtype=np.int8)
        bands = range(facts.count)
        for attempt in range(1, READ_ATTEMPTS + 1):
            for band in bands:
                out[band] = self.call(href, lambda s, b=band + 1: s.read(b, window=window))
            try:
                return check_bands(out)
            except IncompleteRead as exc:
                if attempt == READ_ATTEMPTS:
                    raise SourceError(
                        f"AEF tile {public_href(href)} could not be read ({READ_ATTEMPTS} attempts): {exc}"
                    ) from None
                bands = [int(b) for b in np.flatnonzero(empty_bands(out))]
                self._drop(href)
                clear_gdal_cache(gdal_path(href))
        raise AssertionError("unreachable")

    def call(self, href: str, fn: Callable[[rasterio.DatasetReader], T]) -> T:
        """``fn`` on a dataset of the file; a remote failure is retried up to ``READ_ATTEMPTS`` times."""
        delay = RETRY_DELAY_S
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self._attempt(href, fn, first=attempt == 1, last=attempt == READ_ATTEMPTS)
            except _Retry as exc:
                if attempt == READ_ATTEMPTS:
                    raise SourceError(
                        f"AEF tile {public_href(href)} could not be read ({READ_ATTEMPTS} attempts): {exc}"
                    ) from None
            if self._closed.wait(delay):
                raise SourceError("reading was cancelled")
            delay *= 2
        raise AssertionError("unreachable")

    @contextmanager
    def dataset(self, href: str) -> Iterator[rasterio.DatasetReader]:
        """A dataset of the file for this thread's exclusive use (opened, or taken from the pool)."""
        if self._closed.is_set():
            raise SourceError("reading was cancelled")
        with self._lock:
            free = self._free.setdefault(href, [])
            src = free.pop() if free else None
        with self.env():
            if src is None:
                src = rasterio.open(gdal_path(href))
            try:
                yield src
            except BaseException:
                src.close()  # a dataset that failed may hold bad cached state: never reuse it
                raise
        with self._lock:
            if self._closed.is_set():
                src.close()
            else:
                self._free.setdefault(href, []).append(src)

    def _attempt(
        self, href: str, fn: Callable[[rasterio.DatasetReader], T], first: bool = False, last: bool = False
    ) -> T:
        """``fn`` on a dataset of ``href``. A local failure, or a remote one the server gives a 4xx for,
        is a SourceError; another remote failure is a ``_Retry`` (GDAL's cache of the URL cleared)."""
        try:
            with self.dataset(href) as src:
                return fn(src)
        except (RasterioError, IncompleteRead) as exc:
            if not scheme_of(href):
                raise SourceError(
                    f"AEF tile {public_href(href)} could not be read: {gdal_message(exc)}"
                ) from None
            if isinstance(exc, IncompleteRead):  # the server has nothing to say about it: read it anew
                self._drop(href)  # every open dataset of the file may hold the same bad tile index
                clear_gdal_cache(gdal_path(href))
                raise _Retry(str(exc)) from None
            # Ask the server why only on the first and last failure: a stalled server costs a timeout each.
            cause = probe(href) if first or last else None
            if cause and cause.startswith("HTTP 4"):
                raise SourceError(f"AEF tile {public_href(href)} could not be read: {cause}") from None
            clear_gdal_cache(gdal_path(href))
            raise _Retry(cause or gdal_message(exc, remote=True)) from None

    def _drop(self, href: str) -> None:
        """Close the pooled datasets of one file (those in use are closed when they fail)."""
        with self._lock:
            free = self._free.pop(href, [])
        for src in free:
            src.close()

    def close(self) -> None:
        """Close every pooled dataset and refuse new reads (reads in progress end on their timeouts)."""
        self._closed.set()
        with self._lock:
            for free in self._free.values():
                for src in free:
                    src.close()
            self._free.clear()


def _facts_of(src: rasterio.DatasetReader) -> FileFacts:
    return FileFacts(
        transform=src.transform,
        crs=src.crs.to_string() if src.crs else "",
        width=src.width,
        height=src.height,
        count=src.count,
        block_shape=tuple(src.block_shapes[0]),
    )


_SHORT_READ = re.compile(r"got (\d+) bytes, expected (\d+)")


def gdal_message(exc: BaseException, remote: bool = False) -> str:
    """The most specific message in a rasterio error's chain, in words a user can act on."""
    messages = []
    cause: BaseException | None = exc
    while cause is not None:
        messages.append(str(cause).strip())
        cause = cause.__cause__ or cause.__context__
    text = " ".join(messages)
    short = _SHORT_READ.search(text)
    if short:
        return f"server closed the connection: got {short[1]} of {short[2]} bytes"
    if remote and "not recognized as being in a supported file format" in text:
        return "the file's header could not be fetched (no HTTP error reported by GDAL)"
    return redact(messages[-1] if messages else type(exc).__name__)


def probe(href: str) -> str | None:
    """Why an http(s) URL cannot be read, found with a 1-byte range request: "HTTP 503 ...",
    "timed out after N s", "server closed the connection", ...; None if it reads fine now (or for s3/gs,
    where GDAL signs the requests)."""
    if scheme_of(href) not in ("http", "https"):
        return None
    timeout = http_timeouts()["read_s"]
    request = urllib.request.Request(href, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except TimeoutError:
        return f"timed out after {timeout:g} s"
    except (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead):
        return "server closed the connection"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"timed out after {timeout:g} s"
        if isinstance(reason, ConnectionResetError):
            return "server closed the connection"
        return redact(str(reason))
    except OSError as exc:
        return redact(str(exc))


def _gdal_library() -> ctypes.CDLL | None:
    """The GDAL library rasterio runs on (the copy in its wheel, else the system's), for the one C call
    rasterio does not wrap."""
    candidates = []
    try:
        with open("/proc/self/maps") as maps:  # the copy actually loaded (Linux)
            candidates += sorted({line.split()[-1] for line in maps if "libgdal" in line and "/" in line})
    except OSError:
        pass
    libs = Path(rasterio.__file__).resolve().parent.parent
    candidates += glob.glob(str(libs / "rasterio.libs" / "libgdal*")) + glob.glob(
        str(libs / "rasterio" / ".dylibs" / "libgdal*")
    )
    system = ctypes.util.find_library("gdal")
    candidates += [system] if system else []
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            return lib
        except (OSError, AttributeError):
            continue
    return None


_GDAL = _gdal_library()


def clear_gdal_cache(gdal_filename: str) -> bool:
    """Forget what GDAL's /vsicurl/-family cache holds for one file (size, existence, fetched ranges).
    False if GDAL's library could not be reached (then a retry may see the same bad bytes)."""
    if _GDAL is None or not gdal_filename.startswith("/vsi"):
        return False
    _GDAL.VSICurlPartialClearCache(gdal_filename.encode())
    return True


def interruptible(fn: Callable[[], T]) -> T:
    """``fn()`` run in a daemon thread while this one waits: a GDAL call blocks signals in the thread that
    makes it, so a stalled read made here would hold Ctrl-C until its timeout."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=run, name="aef-open", daemon=True).start()
    return future.result()


class DaemonPool:
    """A minimal thread pool whose threads never hold up the interpreter's exit.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so Ctrl-C during a stalled read
    would wait for the read's timeout. Here ``shutdown`` returns at once: a task in progress ends on its
    own (its reader refuses new reads once closed) and the process can exit meanwhile.
    """

    def __init__(self, threads: int) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"aef-read-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args: object) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)
            del task, future

    def shutdown(self) -> None:
        """Stop the threads once the queued tasks are done or cancelled; does not wait."""
        for _ in self._threads:
            self._queue.put(None)
