"""Downloading a computed Earth Engine image tile by tile: parallel, bounded, retried, split when refused.

Each tile is one ``ee.data.computePixels`` request on an explicit grid. The client retries 429/5xx itself
(``ee.data.setMaxRetries``); errors that still come through are classified by their message (the client
raises only ``ee.EEException``): transient ones are retried here with exponential backoff and jitter,
"too large" ones split the tile into four, down to a minimum size.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import ee
import numpy as np
from google.auth.exceptions import GoogleAuthError, TransportError
from googleapiclient.errors import HttpError
from rasterio.windows import Window

from generator.errors import AuthenticationError, PermissionDeniedError, RequestTooLargeError, SourceError
from generator.grid import BLOCK_SIZE, Grid
from generator.sources.ee_auth import HOW_TO_AUTHENTICATE
from generator.urls import redact

MAX_REQUEST_BYTES = 50331648
"""computePixels: at most 48 MB of uncompressed pixels per request, counted as ``request_bytes`` does."""
MAX_GRID_SIDE = 32768
"""computePixels: at most this many pixels in either dimension."""
MASK_BYTES_PER_BAND = 1
"""Earth Engine counts one mask byte per band and pixel in the request size: "1 must be added to the bytes
per pixel (see EE server code ImageUtils.enforceRequestedSizeLimits)" (google/Xee#209, fixed in
google/Xee#210/#211 by the Earth Engine team; also gee-community/qgis-earthengine-plugin#415)."""
CHANGE_BAND_BYTES = (4,)
"""Our change result: one float32 band."""
CONTEXT_BAND_BYTES = (2, 2, 2)
"""Sentinel-2 context composites: three uint16 bands."""


def request_bytes(pixels: int, band_bytes: tuple[int, ...]) -> int:
    """The size Earth Engine counts for a computePixels request: pixels × Σ over bands (bytes + mask byte)."""
    return pixels * sum(b + MASK_BYTES_PER_BAND for b in band_bytes)


BYTES_PER_PIXEL = request_bytes(1, CHANGE_BAND_BYTES)
"""Change requests: 5 bytes a pixel."""
CONTEXT_BYTES_PER_PIXEL = request_bytes(1, CONTEXT_BAND_BYTES)
"""Context requests: 9 bytes a pixel (3 × (2 + 1)), not 7: a 2560² context tile (58982400 bytes) is over
the limit."""


def largest_tile(bytes_per_pixel: int) -> int:
    """Side of the largest square tile, in whole COG blocks, under the request size limit."""
    return BLOCK_SIZE * int((MAX_REQUEST_BYTES / bytes_per_pixel) ** 0.5 // BLOCK_SIZE)


DEFAULT_TILE_SIZE = largest_tile(BYTES_PER_PIXEL)
"""Change tiles: 3072 px (47185920 bytes)."""
CONTEXT_TILE_SIZE = largest_tile(CONTEXT_BYTES_PER_PIXEL)
"""Context tiles: 2048 px (37748736 bytes)."""
MIN_TILE_SIZE = 128
"""Refused tiles are split down to this side; below it a request fails with RequestTooLargeError."""
RETRY_ATTEMPTS = 4
"""Our own retries of a transient error, on top of the client's."""
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 60.0
NODATA_SENTINEL = -9999.0
"""Masked pixels are unmasked to this value server-side (NPY carries no mask) and become NaN here."""
BAND = "change"

SPLIT_MESSAGES = ("Total request size", "User memory limit exceeded", "Computation timed out")
TRANSIENT_MESSAGES = (
    "too many",
    "quota",
    "rate limit",
    "internal error",
    "unavailable",
    "backend error",
    "deadline exceeded",
    "try again",
)
AUTH_MESSAGES = ("authentication credential", "unauthenticated")
PERMISSION_DENIED = re.compile(
    r"Permission '?(?P<permission>[\w.]+)'? denied on resource '?(?P<resource>[^'\s(]+?)'?\.?(?:\s|$)"
    r"|Caller does not have required permission to use project (?P<project>[\w.:-]+)"
    r"|permission[ _]denied",
    re.IGNORECASE,
)
"""Google's 403 texts: IAM's "Permission 'earthengine.computations.create' denied on resource
'projects/p' (or it may not exist)." (the format of every Google Cloud API's PERMISSION_DENIED), Service
Usage's "Caller does not have required permission to use project p. Grant the caller the
roles/serviceusage.serviceUsageConsumer role ..." (as reported in nasaharvest/street2sat#51 from
earthengine.googleapis.com) and a bare "Permission denied"."""
HOW_TO_GET_PERMISSION = (
    "the credentials are valid, but their account may not use Earth Engine in this project: register the "
    "project for Earth Engine and grant the account roles/earthengine.viewer (or writer) and "
    "roles/serviceusage.serviceUsageConsumer on it, or name a project it may use"
)


def backoff_delay(base_s: float, attempt: int) -> float:
    """Exponential backoff with jitter: about ``base_s × 2^attempt``, capped, randomized by up to half."""
    return min(BACKOFF_MAX_S, base_s * 2**attempt) * random.uniform(0.5, 1.0)


class _Split(Exception):
    """Earth Engine refused a tile as too large/heavy; carries its message."""


class Transient(Exception):
    """A failure worth retrying later (rate limit, server error, dropped connection)."""


def classify(exc: BaseException) -> Exception:
    """Map a client exception to _Split, Transient, PermissionDeniedError, AuthenticationError or
    SourceError (URLs redacted)."""
    msg = redact(str(exc))
    low = msg.lower()
    if denied := PERMISSION_DENIED.search(msg):
        what = (
            f"permission {denied['permission']} on {denied['resource']}"
            if denied["permission"]
            else f"the use of project {denied['project'].rstrip('.')}"
            if denied["project"]
            else "permission"
        )
        return PermissionDeniedError(f"Earth Engine denied {what} ({msg[:300]}): {HOW_TO_GET_PERMISSION}")
    if isinstance(exc, TransportError):  # the token endpoint could not be reached: not the credentials' fault
        return Transient(f"{type(exc).__name__}: {msg}")
    if isinstance(exc, GoogleAuthError) or any(m in low for m in AUTH_MESSAGES):
        return AuthenticationError(
            f"Earth Engine refused the credentials ({msg[:200]}): {HOW_TO_AUTHENTICATE}"
        )
    if any(m in msg for m in SPLIT_MESSAGES):
        return _Split(msg)
    if isinstance(exc, ConnectionError | TimeoutError | OSError) or any(m in low for m in TRANSIENT_MESSAGES):
        return Transient(f"{type(exc).__name__}: {msg}")
    if isinstance(exc, HttpError) and (exc.resp.status == 429 or exc.resp.status >= 500):
        return Transient(msg)
    return SourceError(f"Earth Engine error: {msg}")


@dataclass
class DownloadStats:
    """Counters of one source's requests, for progress and tests (thread-safe via ``lock``)."""

    tiles_total: int = 0
    tiles_done: int = 0
    requests: int = 0  # successful computePixels requests
    failed_requests: int = 0  # requests answered with an error that came through the client
    retries: int = 0
    splits: int = 0
    bytes: int = 0  # pixel bytes downloaded
    request_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each success
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


@dataclass
class TileDownloader:
    """Downloads one expression on a grid's windows; ``sleep`` is injectable so tests can count backoff.

    ``bands`` are the image's bands in the order wanted and ``dtype`` the pixel type Earth Engine answers
    with. One band gives (rows, cols) blocks, several (bands, rows, cols). Float results have masked pixels
    unmasked to NODATA_SENTINEL server-side; they become NaN here.
    """

    image: ee.Image
    grid: Grid
    stats: DownloadStats
    max_concurrency: int
    min_tile_size: int = MIN_TILE_SIZE
    retry_attempts: int = RETRY_ATTEMPTS
    backoff_s: float = BACKOFF_BASE_S
    sleep: Callable[[float], None] = time.sleep
    bands: tuple[str, ...] = (BAND,)
    dtype: str = "float32"

    def run(self, windows: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
        """Yield (window, values) as tiles complete; at most ``max_concurrency`` tiles are held (in flight
        or finished and not yet consumed), so memory does not grow with the region: about
        ``max_concurrency`` × 38 MB at the default tile sizes (×2 briefly while a response is decoded)."""
        todo = list(reversed(windows))
        with self.stats.lock:
            self.stats.tiles_total += len(windows)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="ee-tile")
        pending: dict[Future, Window] = {}
        try:
            while todo or pending:
                while todo and len(pending) < self.max_concurrency:
                    w = todo.pop()
                    pending[pool.submit(self.fetch, w)] = w
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    w = pending.pop(fut)
                    values = fut.result()
                    self.stats.add(tiles_done=1)
                    yield w, values
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def fetch(self, window: Window) -> np.ndarray:
        """One window's values, splitting it into four when Earth Engine refuses it as too large."""
        try:
            return self._request(window)
        except _Split as exc:
            w, h = int(window.width), int(window.height)
            if max(w, h) <= self.min_tile_size:
                raise RequestTooLargeError(
                    f"Earth Engine refused a {w}×{h} px tile even at the minimum tile size "
                    f"({self.min_tile_size} px): {exc}. The computation is too heavy for interactive "
                    "requests; use a smaller region or a batch export."
                ) from None
            self.stats.add(splits=1)
            lead = () if len(self.bands) == 1 else (len(self.bands),)
            out = np.empty((*lead, h, w), dtype=self.dtype)
            for sub in _quarters(window, self.min_tile_size):
                r, c = int(sub.row_off - window.row_off), int(sub.col_off - window.col_off)
                out[..., r : r + int(sub.height), c : c + int(sub.width)] = self.fetch(sub)
            return out

    def _request(self, window: Window) -> np.ndarray:
        for attempt in range(self.retry_attempts + 1):
            try:
                arr = ee.data.computePixels(
                    {"expression": self.image, "fileFormat": "NUMPY_NDARRAY", "grid": self._grid(window)}
                )
            except Exception as exc:
                self.stats.add(failed_requests=1)
                err = classify(exc)
                if isinstance(err, Transient) and attempt < self.retry_attempts:
                    self.stats.add(retries=1)
                    self.sleep(backoff_delay(self.backoff_s, attempt))
                    continue
                if isinstance(err, Transient):
                    raise SourceError(
                        f"Earth Engine kept failing for tile {_describe(window)} after "
                        f"{self.retry_attempts} retries: {err}"
                    ) from None
                if type(err) is SourceError:
                    raise SourceError(f"{err} (tile {_describe(window)})") from None
                raise err from None
            return self._values(arr, window)
        raise AssertionError("unreachable")

    def _values(self, arr: np.ndarray, window: Window) -> np.ndarray:
        h, w = int(window.height), int(window.width)
        names = arr.dtype.names or ()
        if (
            arr.shape != (h, w)
            or any(b not in names for b in self.bands)
            or any(arr.dtype[b] != np.dtype(self.dtype) for b in self.bands)
        ):
            raise SourceError(
                f"Earth Engine answered tile {_describe(window)} with {arr.dtype} {arr.shape}, "
                f"expected {self.dtype} bands {', '.join(self.bands)} of shape {(h, w)}"
            )
        # One contiguous copy; the response is freed.
        if len(self.bands) == 1:
            values = np.array(arr[self.bands[0]], dtype=self.dtype)
        else:
            values = np.stack([arr[b] for b in self.bands]).astype(self.dtype, copy=False)
        if values.dtype.kind == "f":
            values[values == values.dtype.type(NODATA_SENTINEL)] = np.nan
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.bytes += arr.nbytes
            self.stats.request_sizes.append((w, h))
        return values

    def _grid(self, window: Window) -> dict:
        t = self.grid.window_transform(window)
        return {
            "crsCode": self.grid.crs,
            "dimensions": {"width": int(window.width), "height": int(window.height)},
            "affineTransform": {
                "scaleX": t.a,
                "shearX": t.b,
                "translateX": t.c,
                "shearY": t.d,
                "scaleY": t.e,
                "translateY": t.f,
            },
        }


def _quarters(window: Window, min_size: int) -> list[Window]:
    """Split a window in two along each side longer than ``min_size`` (four parts, or two)."""
    w, h = int(window.width), int(window.height)
    cols = [(0, w)] if w <= min_size else [(0, w // 2), (w // 2, w - w // 2)]
    rows = [(0, h)] if h <= min_size else [(0, h // 2), (h // 2, h - h // 2)]
    return [Window(window.col_off + c0, window.row_off + r0, cw, rh) for r0, rh in rows for c0, cw in cols]


def _describe(window: Window) -> str:
    w, h, c, r = (int(v) for v in (window.width, window.height, window.col_off, window.row_off))
    return f"{w}×{h} px at col {c}, row {r}"
