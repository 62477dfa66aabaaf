"""STAC Browser (built from its npm package by `make stac-browser`) in headless Chromium (Debian's), driven by
Playwright, showing the demo catalog as `changecat serve` serves it. Screenshots: build/stac-browser/screens/.

Every request to a host other than 127.0.0.1 is aborted (tests never reach the internet): base-map tiles
fail, and only those errors are tolerated on the console.
"""

from __future__ import annotations

import functools
import io
import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from catalog.serve import CatalogServer

REPO = Path(__file__).resolve().parents[1]
STAC_BROWSER = REPO / "build" / "stac-browser"
SCREENS = STAC_BROWSER / "screens"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_PAGE_HEIGHT = 5_000
"""A 256-entry colormap made collection and item pages 39,000 px tall."""
LOAD_TIMEOUT_MS = 90_000
"""Generous: the machine is shared, and STAC Browser's first load parses a few MB of JavaScript."""
COLLECTION = "google-satellite-embedding-v1-annual"
MIN_DRAWN = 0.02
"""Dark share of the map once the COG is drawn (the forest item's no-change pixels are black)."""
FOREST_TITLE = "Forest with a 2024 fire: change 2017→2024 (cosine)"


@pytest.fixture(scope="module")
def dist() -> Path:
    skipped = STAC_BROWSER / "SKIPPED"
    if skipped.is_file():
        pytest.skip(f"STAC Browser could not be set up: {skipped.read_text().strip()}")
    if not (STAC_BROWSER / "dist" / "index.html").is_file():
        pytest.skip("STAC Browser is not built: run `make stac-browser` (`make test` does)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make stac-browser` installs Debian's chromium")
    pytest.importorskip("playwright.sync_api", reason="Playwright (a test dependency) is not installed")
    return STAC_BROWSER / "dist"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser_url(dist: Path) -> Iterator[str]:
    """STAC Browser's built files on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(dist)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def served(demo_catalog: Path) -> Iterator[CatalogServer]:
    server = CatalogServer(demo_catalog, port=0)
    thread = server.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def page(dist: Path, browser_url: str, served: CatalogServer) -> Iterator[dict]:
    from playwright.sync_api import sync_playwright

    SCREENS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        state: dict = {"errors": [], "aborted": set(), "cog_ranges": 0, "thumbnails": set()}

        def route(r) -> None:
            host = urlsplit(r.request.url).hostname
            if host not in ("127.0.0.1", None):
                state["aborted"].add(host)
                r.abort("internetdisconnected")
            else:
                r.continue_()

        def on_response(resp) -> None:
            url = resp.url
            if url.endswith("/change.tif") and resp.status == 206:
                state["cog_ranges"] += 1
            if url.endswith("/thumbnail.png") and resp.ok:
                state["thumbnails"].add(url)

        context.route("**/*", route)
        pg = context.new_page()
        pg.on("console", lambda m: state["errors"].append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: state["errors"].append(str(e)))
        pg.on("response", on_response)
        state["page"] = pg
        state["open"] = lambda url: pg.goto(f"{browser_url}#/external/{url}", timeout=LOAD_TIMEOUT_MS)
        yield state
        browser.close()


def dark_fraction(png: bytes) -> float:
    """Share of dark pixels in a screenshot: the change raster's low values (grey scale from black)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    return float((rgb.sum(axis=2) < 150).mean())


def scroll_through(pg) -> None:
    """Scroll to the bottom a viewport at a time, letting lazily loaded content arrive."""
    for _ in range(MAX_PAGE_HEIGHT // 600 + 1):
        pg.mouse.wheel(0, 600)
        pg.wait_for_timeout(400)
    pg.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
    pg.evaluate("window.scrollTo(0, 0)")


def page_height(pg) -> int:
    return int(pg.evaluate("Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"))


def test_catalog_page_shows_its_title(page: dict, served: CatalogServer) -> None:
    pg = page["page"]
    page["open"](served.catalog_url)
    pg.get_by_text("changecat demo: synthetic embedding change").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    pg.get_by_text("Change maps from AlphaEarth").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    pg.screenshot(path=str(SCREENS / "catalog.png"), full_page=True)
    assert page_height(pg) < MAX_PAGE_HEIGHT


def test_collection_lists_every_item_with_its_thumbnail(page: dict, served: CatalogServer) -> None:
    pg = page["page"]
    page["open"](f"{served.base_url}{COLLECTION}/collection.json")
    pg.get_by_text("Change maps from AlphaEarth Foundations").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    pg.get_by_text(FOREST_TITLE).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    scroll_through(pg)  # item cards load their item (and quicklook) when they come into view
    pg.screenshot(path=str(SCREENS / "collection.png"), full_page=True)
    text = pg.inner_text("body")
    assert page_height(pg) < MAX_PAGE_HEIGHT
    titles = [json.loads(u.data)["properties"]["title"] for u in served.objects.values() if u.kind == "item"]
    assert len(titles) == 12
    assert [t for t in titles if t not in text] == []
    loaded: set[str] = set()
    for _ in range(LOAD_TIMEOUT_MS // 500):  # the last cards' images may still be loading: wait for them
        loaded = set(
            pg.evaluate(
                "Array.from(document.images)"
                ".filter(i => i.src.endsWith('/thumbnail.png') && i.naturalWidth > 0).map(i => i.src)"
            )
        )
        if len(loaded) >= 12:
            break
        scroll_through(pg)
        pg.wait_for_timeout(500)
    assert len(loaded) >= 12  # every item card with its quicklook (plus the collection's own)


def test_item_page_shows_the_cog_on_the_map(page: dict, served: CatalogServer) -> None:
    pg = page["page"]
    before = page["cog_ranges"]
    page["open"](f"{served.base_url}{COLLECTION}/forest_2017_2024_cosine/forest_2017_2024_cosine.json")
    pg.get_by_text(FOREST_TITLE).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    pg.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
    pg.locator(".ol-viewport canvas").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    pg.get_by_text(re.compile("shown", re.IGNORECASE)).first.wait_for(timeout=LOAD_TIMEOUT_MS)  # asset badge
    pg.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
    drawn = 0.0
    for _ in range(LOAD_TIMEOUT_MS // 1000):  # decoding and drawing the tiles comes after the reads
        drawn = dark_fraction(pg.locator(".ol-viewport").first.screenshot())
        if drawn > MIN_DRAWN:
            break
        pg.wait_for_timeout(1000)
    pg.screenshot(path=str(SCREENS / "item.png"), full_page=True)
    assert page_height(pg) < MAX_PAGE_HEIGHT
    assert page["cog_ranges"] > before  # the map read the COG by byte ranges from our server
    assert drawn > MIN_DRAWN  # and drew it: without base map the map is white but for the raster


def test_no_console_errors_but_unreachable_hosts(page: dict) -> None:
    local_errors = [
        e
        for e in page["errors"]
        if "ERR_INTERNET_DISCONNECTED" not in e and not any(h and h in e for h in page["aborted"])
    ]
    assert local_errors == [], (local_errors, sorted(page["aborted"]))
