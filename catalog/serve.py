"""Serve a local catalog on 127.0.0.1 as it would be published (``catalog.publish.plan`` with this server as
the base URL), with byte ranges (GDAL and titiler read COGs in ranges) and CORS (STAC Browser runs on
another origin), to look at products in STAC Browser before publishing them.

The publication is planned when the server starts; restart it to see products made since.
"""

from __future__ import annotations

import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from catalog.layout import CATALOG_FILE
from catalog.publish import Upload, plan

DEFAULT_PORT = 8765
STAC_BROWSER_URL = "https://radiantearth.github.io/stac-browser/#/external/"
"""The public STAC Browser instance; it opens any catalog URL appended after ``#/external/``."""

READ_CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def browser_url(catalog_url: str, browser: str = STAC_BROWSER_URL) -> str:
    """STAC Browser's address for a catalog URL: ``…/external/`` + the URL (its ``https://`` is implied)."""
    return browser + catalog_url.removeprefix("https://")


class CatalogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, catalog_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        super().__init__((host, port), _Handler)
        self.base_url = f"http://{host}:{self.server_address[1]}/"
        self.objects: dict[str, Upload] = {u.key: u for u in plan(Path(catalog_dir), self.base_url)}

    @property
    def catalog_url(self) -> str:
        return self.base_url + CATALOG_FILE

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with ``shutdown()``)."""
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: CatalogServer

    def log_message(self, format: str, *args: object) -> None:  # quiet: the CLI prints the URLs
        pass

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Range, Content-Type")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges")

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        key = unquote(urlsplit(self.path).path).lstrip("/") or CATALOG_FILE
        upload = self.server.objects.get(key)
        if upload is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = upload.data
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if match := _RANGE.match(self.headers.get("Range", "")):
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            elif last:
                start = max(0, size - int(last))
            if start > end or start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self._cors()
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", upload.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            self._send(data, start, end - start + 1)

    def _send(self, data: bytes | Path, start: int, length: int) -> None:
        if isinstance(data, bytes):
            self.wfile.write(data[start : start + length])
            return
        with open(data, "rb") as f:
            f.seek(start)
            while length > 0 and (chunk := f.read(min(READ_CHUNK, length))):
                self.wfile.write(chunk)
                length -= len(chunk)
