"""A local stand-in for the Earth Engine REST API, served over HTTP on 127.0.0.1 for the real client.

Serves the discovery document and algorithm list bundled with earthengine-api, ``value:compute`` (getInfo)
and ``image:computePixels`` over an AEF-format mirror, with Earth Engine's request limits and error bodies.
Faults can be injected (``inject`` or ``POST /_standin/faults``) and every request is logged (``log``,
``GET /_standin/log``) so tests can count requests and their sizes.
"""

from __future__ import annotations

import io
import json
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ee
import numpy as np
import shapely
from affine import Affine

from tests.ee_standin.evaluator import BYTES_PER_PIXEL, NPY_DTYPES, EEError, Evaluator, Image, to_json_value
from tests.ee_standin.mirror import MirrorImage, PixelGrid, load_mirror
from tests.ee_standin.s2 import CLOUD_SCORE_COLLECTION, S2_COLLECTION, S2Spec

AEF_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
MAX_REQUEST_BYTES = 50331648
"""computePixels: uncompressed size limit (48 MB). Earth Engine counts pixels × Σ over bands of (bytes per
value + 1): one mask byte per band, "1 must be added to the bytes per pixel (see EE server code
ImageUtils.enforceRequestedSizeLimits)" (google/Xee#209 and the Earth Engine team's fix, google/Xee#210)."""
MAX_GRID_SIDE = 32768
"""computePixels: at most this many pixels in either dimension."""
MAX_BANDS = 1024
S2_SYSTEM_VERSION = 1731000000000000
CLOUD_SCORE_SYSTEM_VERSION = 1731500000000000
"""system:version of the synthetic Sentinel-2 and Cloud Score+ collections (any fixed asset update times)."""
STRIP_PIXELS = 1 << 16
"""Rows are rendered in strips of about this many pixels, so memory stays small for any request."""
FAULT_MESSAGES = {
    "429": (429, "RESOURCE_EXHAUSTED", "Too many concurrent aggregations."),
    "500": (500, "INTERNAL", "An internal error has occurred."),
    "503": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "memory": (400, "INVALID_ARGUMENT", "User memory limit exceeded."),
    "timeout": (400, "INVALID_ARGUMENT", "Computation timed out."),
}
PERMISSION_DENIED = (
    403,
    "PERMISSION_DENIED",
    "Permission 'earthengine.computations.create' denied on resource 'projects/{project}' (or it may not "
    "exist).",
)
"""A 403 as Google Cloud APIs word an IAM denial: "Permission '<permission>' denied on resource '<resource>'
(or it may not exist)." with status PERMISSION_DENIED (the common error model of Google APIs,
cloud.google.com/apis/design/errors; earthengine.computations.create is the permission computePixels and
value:compute need, per Earth Engine's access-control page)."""
STALL_MAX_S = 120.0
"""A stalled request holds its connection until the server is stopped, or this long, then drops it."""
FAULT_KINDS = (*FAULT_MESSAGES, "drop", "stall", "permission")
_EE_DIR = Path(ee.__file__).parent
DISCOVERY_FILE = _EE_DIR / "tests" / "cloud_api_discovery_document.json"
ALGORITHMS_FILE = _EE_DIR / "tests" / "algorithms.json"
_ROUTE = re.compile(r"^/(v1\w*)/projects/([^/]+)/(algorithms|value:compute|image:computePixels)$")


@dataclass
class Fault:
    """``count`` answers of ``kind`` (see FAULT_KINDS) to requests of ``endpoint``; count < 0 = forever."""

    kind: str
    count: int = 1
    endpoint: str = "image:computePixels"


@dataclass
class LogEntry:
    method: str
    path: str
    endpoint: str
    status: int
    request_bytes: int
    response_bytes: int
    width: int = 0
    height: int = 0
    fault: str = ""
    message: str = ""
    authorization: str = ""  # the request's Authorization header ("" when none was sent)


def discovery_document() -> bytes:
    """The bundled (v1alpha) discovery document, relabelled v1 so the current client accepts it."""
    return DISCOVERY_FILE.read_text().replace("v1alpha", "v1").encode()


class StandinServer:
    """The stand-in, serving ``mirror`` as ``collection_id`` on 127.0.0.1:``port`` (0 = any free port).

    ``memory_limit_pixels``: computePixels requests with more pixels answer "User memory limit exceeded."
    (how Earth Engine fails a too-heavy tile). ``max_request_bytes`` lowers the size limit for tests.
    ``token``: when set, requests must carry ``Authorization: Bearer <token>`` or get 401; ``accept``: a test
    of the bearer token instead (e.g. ``TokenServer.is_issued``: tokens issued by the local token endpoint).
    A synthetic ``COPERNICUS/S2_SR_HARMONIZED`` collection over the mirror's bounds and years is served too
    (``s2``, see tests/ee_standin/s2.py). ``collection_properties``: the mirror collection's own properties
    (default: ``system:version`` from the index's time).
    """

    def __init__(
        self,
        mirror: Path,
        collection_id: str = AEF_COLLECTION,
        port: int = 0,
        faults: list[Fault] | None = None,
        memory_limit_pixels: int | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        token: str | None = None,
        accept: Callable[[str], bool] | None = None,
        collection_properties: dict | None = None,
    ) -> None:
        images = tuple(load_mirror(Path(mirror)))
        self.s2 = _s2_spec(images)
        collections = {
            collection_id: images,
            S2_COLLECTION: self.s2.collection() if self.s2 else (),
            CLOUD_SCORE_COLLECTION: self.s2.score_collection() if self.s2 else (),
        }
        # Every Earth Engine asset carries "system:version", the time of its last update in microseconds
        # (ee.data.getAsset / getInfo of an asset; used by changecat as the dataset's release). By default the
        # mirror's index time; tests may set a collection's "version" property too.
        if collection_properties is None:
            mtime = (Path(mirror) / "aef_index.parquet").stat().st_mtime if images else 0.0
            collection_properties = {"system:version": int(mtime * 1_000_000)}
        self.collection_properties = collection_properties
        properties = {
            collection_id: collection_properties,
            S2_COLLECTION: {"system:version": S2_SYSTEM_VERSION},
            CLOUD_SCORE_COLLECTION: {"system:version": CLOUD_SCORE_SYSTEM_VERSION},
        }
        self.evaluator = Evaluator(collections, properties)
        self.faults: list[Fault] = list(faults or [])
        self.memory_limit_pixels = memory_limit_pixels
        self.max_request_bytes = max_request_bytes
        self.token = token
        self.accept = accept
        self.log: list[LogEntry] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most computePixels requests computed at once
        self.lock = threading.Lock()
        self._discovery = discovery_document()
        self._algorithms = ALGORITHMS_FILE.read_bytes()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.released = threading.Event()  # set by stop(): stalled requests end
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> StandinServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, kind: str, count: int = 1, endpoint: str = "image:computePixels") -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; valid: {', '.join(FAULT_KINDS)}")
        with self.lock:
            self.faults.append(Fault(kind, count, endpoint))

    def entries(self, endpoint: str = "image:computePixels") -> list[LogEntry]:
        with self.lock:
            return [e for e in self.log if e.endpoint == endpoint]

    def take_fault(self, endpoint: str) -> str | None:
        with self.lock:
            for f in self.faults:
                if f.endpoint in (endpoint, "*") and f.count != 0:
                    f.count -= 1
                    return f.kind
        return None

    # --- endpoints -------------------------------------------------------------------------------------

    def value_compute(self, body: dict) -> bytes:
        result = to_json_value(self.evaluator.evaluate(body["expression"]))
        return json.dumps({"result": result}).encode()

    def compute_pixels(self, body: dict, entry: LogEntry) -> bytes:
        grid = _parse_grid(body.get("grid"))
        entry.width, entry.height = grid.width, grid.height
        fmt = body.get("fileFormat", "PNG")
        image = self.evaluator.evaluate(body["expression"])
        if not isinstance(image, Image):
            raise EEError("computePixels: the expression must evaluate to an Image.")
        bands = list(image.bands)
        if body.get("bandIds"):
            missing = [b for b in body["bandIds"] if b not in bands]
            if missing:
                raise EEError(f"Image.select: Pattern '{missing[0]}' did not match any bands.")
            bands = list(body["bandIds"])
        if not bands or len(bands) > MAX_BANDS:
            raise EEError(f"computePixels: the image must have between 1 and {MAX_BANDS} bands.")
        if max(grid.width, grid.height) > MAX_GRID_SIDE:
            raise EEError(
                f"Total request width ({grid.width}) and height ({grid.height}) must each be less than "
                f"or equal to {MAX_GRID_SIDE}."
            )
        size = grid.width * grid.height * (BYTES_PER_PIXEL[image.ptype] + 1) * len(bands)
        if size > self.max_request_bytes:
            raise EEError(
                f"Total request size ({size} bytes) must be less than or equal to "
                f"{self.max_request_bytes} bytes."
            )
        if self.memory_limit_pixels is not None and grid.width * grid.height > self.memory_limit_pixels:
            raise EEError(FAULT_MESSAGES["memory"][2])
        if fmt != "NPY":
            raise EEError(f"fileFormat {fmt} is not implemented by the changecat stand-in (use NPY).")
        idx = [image.bands.index(b) for b in bands]
        out = np.zeros((grid.height, grid.width), dtype=[(b, NPY_DTYPES[image.ptype]) for b in bands])
        step = max(1, STRIP_PIXELS // grid.width)
        for row in range(0, grid.height, step):
            n = min(step, grid.height - row)
            data, mask = image.render(grid.rows(row, n))
            for b, i in zip(bands, idx, strict=True):
                # Masked pixels are returned as 0 in NPY, which carries no mask.
                out[b][row : row + n] = np.where(mask[i], data[i], 0)
        buf = io.BytesIO()
        np.save(buf, out)
        return buf.getvalue()


def _s2_spec(images: tuple[MirrorImage, ...]) -> S2Spec | None:
    """The synthetic Sentinel-2 collection over the mirror's bounds and years (None for an empty mirror)."""
    if not images:
        return None
    bounds = shapely.union_all([im.footprint for im in images]).bounds
    years = {datetime.fromtimestamp(im.properties["system:time_start"] / 1000, tz=UTC).year for im in images}
    return S2Spec.over(bounds, tuple(sorted(years)))


def _parse_grid(grid: Any) -> PixelGrid:
    if not isinstance(grid, dict) or "affineTransform" not in grid or "dimensions" not in grid:
        raise EEError("computePixels: the stand-in needs an explicit grid (affineTransform, dimensions).")
    t = grid["affineTransform"]
    d = grid["dimensions"]
    transform = Affine(
        float(t.get("scaleX", 0)),
        float(t.get("shearX", 0)),
        float(t.get("translateX", 0)),
        float(t.get("shearY", 0)),
        float(t.get("scaleY", 0)),
        float(t.get("translateY", 0)),
    )
    return PixelGrid(grid.get("crsCode", "EPSG:4326"), transform, int(d["width"]), int(d["height"]))


def _error_body(code: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


def _handler(server: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._handle("GET", b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle("POST", self.rfile.read(length))

        def _handle(self, method: str, raw: bytes) -> None:
            path = self.path.split("?", 1)[0]
            m = _ROUTE.match(path)
            endpoint = m.group(3) if m else path
            entry = LogEntry(method, self.path, endpoint, 200, len(raw), 0)
            entry.authorization = self.headers.get("Authorization") or ""
            try:
                body, ctype = self._route(method, path, m, raw, entry)
                code = 200
            except EEError as exc:
                code, ctype = exc.code, "application/json"
                body = _error_body(exc.code, exc.status, exc.message)
                entry.message = exc.message
            except _Drop as drop:
                entry.status, entry.fault = 0, "stall" if drop.stall else "drop"
                with server.lock:
                    server.log.append(entry)
                if drop.stall:
                    # A stalled connection: accepted, request read, no answer (a hung backend or proxy).
                    server.released.wait(STALL_MAX_S)
                self.close_connection = True
                return
            except Exception as exc:  # a bug of the stand-in: answer 500 and record it for the tests
                code, ctype = 500, "application/json"
                entry.message = "stand-in failure: " + "".join(traceback.format_exception(exc))[-2000:]
                body = _error_body(500, "INTERNAL", f"stand-in failure: {type(exc).__name__}: {exc}")
            entry.status, entry.response_bytes = code, len(body)
            with server.lock:
                server.log.append(entry)
            self._send(code, body, ctype)

        def _route(self, method: str, path: str, m: re.Match | None, raw: bytes, entry: LogEntry):
            if path == "/$discovery/rest" and method == "GET":
                return server._discovery, "application/json"
            if path == "/_standin/log" and method == "GET":
                with server.lock:
                    return json.dumps([asdict(e) for e in server.log]).encode(), "application/json"
            if path == "/_standin/faults" and method == "POST":
                spec = json.loads(raw or b"{}")
                try:
                    server.inject(spec["kind"], int(spec.get("count", 1)), spec.get("endpoint", "*"))
                except (KeyError, ValueError) as exc:
                    raise EEError(f"bad fault spec {spec}: {exc}") from exc
                return b"{}", "application/json"
            if m is None:
                raise EEError(f"Unknown path {path}.", code=404, status="NOT_FOUND")
            auth = entry.authorization
            bearer = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            wanted = server.accept or (None if server.token is None else lambda t: t == server.token)
            if wanted is not None and (bearer is None or not wanted(bearer)):
                raise EEError(
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential.",
                    code=401,
                    status="UNAUTHENTICATED",
                )
            endpoint = m.group(3)
            fault = server.take_fault(endpoint)
            if fault:
                entry.fault = fault
                if fault in ("drop", "stall"):
                    raise _Drop(stall=fault == "stall")
                if fault == "permission":
                    code, status, message = PERMISSION_DENIED
                    raise EEError(message.format(project=m.group(2)), code=code, status=status)
                code, status, message = FAULT_MESSAGES[fault]
                raise EEError(message, code=code, status=status)
            if endpoint == "algorithms":
                return server._algorithms, "application/json"
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise EEError(f"Invalid JSON payload received. {exc}") from exc
            if endpoint == "value:compute":
                return server.value_compute(body), "application/json"
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                return server.compute_pixels(body, entry), "application/octet-stream"
            finally:
                with server.lock:
                    server.in_flight -= 1

    return Handler


class _Drop(Exception):
    """Close the connection without an answer (an injected dropped connection), after holding it open
    without answering when ``stall``."""

    def __init__(self, stall: bool = False) -> None:
        super().__init__()
        self.stall = stall
