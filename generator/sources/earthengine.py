"""Earth Engine source: the change is computed server-side and only the single-band result is downloaded.

The method is an EE expression over the two years' mosaics, as in the blog's script: ``a.multiply(b)
.reduce(ee.Reducer.sum())`` is the per-pixel cosine of the unit-length embeddings; cosine change is one minus
it, angle change ``acos(.) / π``. ``mosaic()`` drops the UTM projection, so every request names its output
grid explicitly (``computePixels`` ``grid``). Tiles are as large as the request limits allow and download in
parallel (``ee_tiles``). Sentinel-2 context composites and the ``s2-difference`` method come from the
expressions in ``ee_s2`` and download the same way.

The endpoint is Earth Engine's high-volume one unless ``url`` names another: "For larger workflows requiring
parallelization, using the Earth Engine high volume endpoint" is what Earth Engine's data-extraction guide
asks of parallel ``computePixels`` (developers.google.com/earth-engine/guides/data_extraction and
/cloud/highvolume). Every request has a client deadline (``CLIENT_DEADLINE_S``; the client sets none by
default, ``ee.data.setDeadline``), so a stalled connection fails and is retried instead of holding a worker.

Credentials: the ``credentials`` argument, else ``ee_auth.find_credentials`` (a service-account key file
named by ``EE_SERVICE_ACCOUNT_KEY``, ``earthengine authenticate``'s, application-default credentials, with
Earth Engine's scopes). When ``url`` points to a host other than Google's (a local stand-in), anonymous
credentials are used: a user's Google credentials are never sent to another host. Never logged.

Earth Engine's client keeps global state: the last source opened is the one the client talks to; a source
re-initializes the client when it is used after another one.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import ee
import numpy as np
import shapely
from google.auth.credentials import Credentials
from rasterio.windows import Window
from shapely.geometry import Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from generator.cluster import Lookahead, TaskStream
from generator.config import EE_MAX_CONCURRENCY
from generator.errors import AuthenticationError, ConfigError, PermissionDeniedError, SourceError
from generator.grid import Grid, to_crs
from generator.methods import METHODS
from generator.preview import PREVIEW_BANDS, PreviewCollector, PreviewPlan
from generator.sources import ee_cluster, ee_s2, ee_tiles
from generator.sources.base import AEF_DATASET, Block, Cost, Source, SourceInfo
from generator.sources.ee_auth import find_credentials, is_google
from generator.sources.ee_s2 import S2_COLLECTION, S2_METHOD, S2_RGB_BANDS
from generator.sources.ee_tiles import (
    CONTEXT_TILE_SIZE,
    DEFAULT_TILE_SIZE,
    MAX_GRID_SIDE,
    MAX_REQUEST_BYTES,
    MIN_TILE_SIZE,
    NODATA_SENTINEL,
    DownloadStats,
    TileDownloader,
)
from generator.urls import public_href, redact

HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
"""Earth Engine's high-volume endpoint (``ee.data.HIGH_VOLUME_API_BASE_URL``), the default here: it is the one
Earth Engine asks automated, parallel requests to use."""
CLIENT_DEADLINE_S = 360.0
"""Client deadline of one request (``ee.data.setDeadline``; socket timeout of the client's HTTP session).
Interactive requests "must finish processing within five minutes" (Earth Engine's processing environments
guide), after which Earth Engine answers "Computation timed out"; a minute more covers the transfer."""
CLIENT_MAX_RETRIES = 5
"""Retries of 429/5xx done by the earthengine-api client itself (its default)."""
VERSION_PROPERTIES = ("version", "system:version")
"""Collection properties that identify a dataset's release in Earth Engine."""
DATA_CATALOG_TIMEOUT_S = 5.0
"""ee.Initialize fetches Google's data catalog for deprecation warnings; never wait longer than this."""
BAND_NAMES = [f"A{i:02d}" for i in range(64)]

__all__ = ["S2_COLLECTION", "S2_RGB_BANDS", "EarthEngineSource"]

_init_lock = threading.Lock()
_active: int | None = None  # serial number of the source the ee client is initialized for
_serials = itertools.count()


class EarthEngineSource(Source):
    """AlphaEarth embeddings (or a collection like them) in Earth Engine, change computed server-side.

    Optional keyword arguments beyond the config exist for tests and tuning: ``credentials`` (a
    google.auth credentials object), ``tile_size`` (side of the download tiles), ``min_tile_size``,
    ``client_retries`` (the client's own 429/5xx retries), ``retry_attempts`` and ``backoff_s`` (ours),
    ``s2_max_cloudy_percent`` (Sentinel-2 scene pre-filter; None keeps every scene), ``deadline_s`` (the
    client deadline of one request).
    """

    def __init__(
        self,
        project: str,
        collection: str = AEF_DATASET,
        url: str | None = None,
        max_concurrency: int = 16,
        *,
        credentials: Credentials | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        min_tile_size: int = MIN_TILE_SIZE,
        client_retries: int = CLIENT_MAX_RETRIES,
        retry_attempts: int = ee_tiles.RETRY_ATTEMPTS,
        backoff_s: float = ee_tiles.BACKOFF_BASE_S,
        s2_max_cloudy_percent: float | None = ee_s2.MAX_CLOUDY_PERCENT,
        deadline_s: float = CLIENT_DEADLINE_S,
    ) -> None:
        if not 1 <= max_concurrency <= EE_MAX_CONCURRENCY:
            raise ConfigError(
                f"earthengine max_concurrency {max_concurrency}: must be 1..{EE_MAX_CONCURRENCY}"
            )
        too_big = tile_size**2 * ee_tiles.BYTES_PER_PIXEL > MAX_REQUEST_BYTES
        if not (0 < min_tile_size <= tile_size <= MAX_GRID_SIDE) or too_big:
            raise ConfigError(
                f"earthengine tile_size {tile_size} / min_tile_size {min_tile_size}: need 0 < min ≤ tile, "
                f"tile ≤ {MAX_GRID_SIDE} and tile² × {ee_tiles.BYTES_PER_PIXEL} ≤ {MAX_REQUEST_BYTES} bytes"
            )
        if deadline_s <= 0:
            raise ConfigError(f"earthengine deadline_s {deadline_s}: must be > 0 seconds")
        self.project, self.collection = project, collection
        # Always explicit: ee.Initialize(url=None) keeps the URL of an earlier initialization (a stand-in).
        self.url = url.rstrip("/") if url else HIGH_VOLUME_URL
        self.deadline_s = deadline_s
        self.max_concurrency = max_concurrency
        self.tile_size, self.min_tile_size = tile_size, min_tile_size
        self.client_retries, self.retry_attempts, self.backoff_s = client_retries, retry_attempts, backoff_s
        self.s2_max_cloudy_percent = s2_max_cloudy_percent
        self.stats = DownloadStats()
        self._versions: dict[str, str] = {}  # dataset → its release, read once
        self._serial = next(_serials)
        self._lookahead = Lookahead()
        self._spec: ee_cluster.WorkerSpec | None = None
        self._credentials = credentials if credentials is not None else find_credentials(self.url)
        self._activate()

    # --- session --------------------------------------------------------------------------------------

    def _activate(self) -> None:
        """Point the (global) ee client at this source's endpoint, project and credentials."""
        global _active
        with _init_lock:
            if _active == self._serial:
                return
            _quiet_data_catalog(self.url)
            try:
                ee.data.setMaxRetries(self.client_retries)
                ee.Initialize(credentials=self._credentials, project=self.project, url=self.url)
                ee.data.setMaxRetries(self.client_retries)
                # After Initialize (it rebuilds the client for the URL just set); later initializations of
                # this process keep it, so their own discovery requests are bounded too.
                ee.data.setDeadline(self.deadline_s * 1000)
            except Exception as exc:
                err = ee_tiles.classify(exc)
                if isinstance(err, AuthenticationError | PermissionDeniedError):
                    raise err from None
                where = public_href(self.url)
                raise SourceError(
                    f"cannot open Earth Engine at {where} for project '{self.project}': {redact(str(exc))}"
                ) from None
            _active = self._serial

    def _call(self, what: str, value: ee.ComputedObject) -> Any:
        """getInfo with our error classes; transient failures the client let through are retried."""
        self._activate()
        for attempt in range(self.retry_attempts + 1):
            try:
                return value.getInfo()
            except Exception as exc:
                err = ee_tiles.classify(exc)
                if isinstance(err, ee_tiles.Transient) and attempt < self.retry_attempts:
                    time.sleep(ee_tiles.backoff_delay(self.backoff_s, attempt))
                    continue
                if isinstance(err, SourceError):
                    raise type(err)(f"{self.collection}: {what}: {err}") from None  # keeps its class
                raise SourceError(f"{self.collection}: {what}: {exc}") from None
        raise AssertionError("unreachable")

    # --- Source interface -----------------------------------------------------------------------------

    @property
    def info(self) -> SourceInfo:
        # The dataset's page is added by the catalog, which knows each dataset's licence and links.
        return SourceInfo("earthengine", self.collection, self.collection, version=self.dataset_version())

    def dataset_version(self) -> str:
        """The collection's release as Earth Engine reports it: its ``version`` property (where the dataset
        has one) and ``system:version`` (the asset's last update, microseconds since the epoch), e.g.
        "version 1.0, system:version 1722016811296000 (2024-07-26T18:00:11Z)". Read once per source."""
        return self.version_of(self.collection)

    def version_of(self, dataset: str) -> str:
        """The release of ``dataset`` (the embeddings, or Sentinel-2 for ``s2-difference``, whose clear
        pixels come from Cloud Score+: both named then)."""
        if dataset not in self._versions:
            ids = [dataset] + ([ee_s2.CLOUD_SCORE_COLLECTION] if dataset == S2_COLLECTION else [])
            props = self._call(
                "reading the collection's version",
                ee.List(
                    [
                        ee.Dictionary({key: ee.ImageCollection(i).get(key) for key in VERSION_PROPERTIES})
                        for i in ids
                    ]
                ),
            )
            described = [describe_version(p or {}) for p in props or []]
            if len(ids) == 1:
                self._versions[dataset] = described[0] if described else ""
            else:
                self._versions[dataset] = "; ".join(
                    f"{i} {d}" for i, d in zip(ids, described, strict=True) if d
                )
        return self._versions[dataset]

    def request_count(self) -> int:
        """computePixels requests made so far (answered or failed; the client's own retries of 429/5xx
        are not seen)."""
        return self.stats.requests + self.stats.failed_requests

    def years(self) -> list[int]:
        starts = self._call(
            "listing the years",
            ee.ImageCollection(self.collection).aggregate_array("system:time_start").distinct(),
        )
        years = sorted({datetime.fromtimestamp(ms / 1000, tz=UTC).year for ms in starts or []})
        if not years:
            raise SourceError(f"Earth Engine collection {self.collection} holds no dated images")
        return years

    def has_data(self, geometry_wgs84: BaseGeometry, year: int) -> bool:
        size = self._year(year).filterBounds(ee.Geometry(mapping(geometry_wgs84))).size()
        return int(self._call(f"counting images of {year}", size)) > 0

    def coverage(self, geometry_wgs84: BaseGeometry, year: int) -> BaseGeometry:
        """The part of the geometry inside the footprints of the year's images (``Collection.geometry``:
        the union of the images' footprints, in WGS84), read with one value request."""
        area = ee.Geometry(mapping(geometry_wgs84))
        union = self._call(
            f"reading the footprints of {year}", self._year(year).filterBounds(area).geometry()
        )
        parts = shape(union) if union else Polygon()
        polygons = [g for g in getattr(parts, "geoms", [parts]) if g.geom_type in ("Polygon", "MultiPolygon")]
        if not polygons:
            return Polygon()
        return shapely.union_all(polygons).intersection(geometry_wgs84)

    def cost(self, grid: Grid, from_year: int, to_year: int, windows: list[Window]) -> Cost:
        """One computePixels request per window, of its pixels; exact unless Earth Engine refuses a tile
        as too large (it is split in four) or a request fails and is retried."""
        return Cost(requests=len(windows), pixels=sum(int(w.width) * int(w.height) for w in windows))

    def preview_cost(self, plan: PreviewPlan) -> Cost:
        """One computePixels request of the picture's pixels (``embedding_preview``)."""
        return Cost(requests=1, pixels=plan.rows * plan.cols)

    def progress(self) -> str:
        s = self.stats
        note = f"tiles {s.tiles_done}/{s.tiles_total}, {s.bytes / 1e6:.1f} MB"
        return note + (f", {s.retries} retries, {s.splits} splits" if s.retries or s.splits else "")

    def windows(self, grid: Grid) -> list[Window]:
        return list(grid.windows(self.tile_size))

    def compute(
        self,
        grid: Grid,
        from_year: int,
        to_year: int,
        method: str,
        windows: list[Window],
        preview: PreviewCollector | None = None,
    ) -> Iterator[Block]:
        self._activate()
        for year in preview.missing() if preview is not None else ():
            preview.put(year, self.embedding_preview(preview.plan, year))
        stream = self._lookahead.take((grid, from_year, to_year, method, tuple(windows)))
        if stream is not None:
            return self._consume(stream)
        image = self.expression(grid, from_year, to_year, method)
        if self._remote():
            return self._consume(self._submit(image, grid, windows))
        return self._downloader(image, grid).run(windows)

    def prefetch(self, grid: Grid, from_year: int, to_year: int, method: str, windows: list[Window]) -> None:
        """On a cluster, submit a later job's first tiles now; its ``compute`` takes them up."""
        key = (grid, from_year, to_year, method, tuple(windows))
        if self._remote() and key not in self._lookahead:
            self._activate()
            image = self.expression(grid, from_year, to_year, method)
            self._lookahead.put(key, self._submit(image, grid, windows))

    def worker_check(self) -> Callable[[], None]:
        return partial(ee_cluster.check_worker, self._worker_spec())

    def close(self) -> None:
        self._lookahead.clear()

    # --- on a cluster (ee_cluster) ----------------------------------------------------------------------

    def _remote(self) -> bool:
        return self.executor is not None and self.executor.remote

    def _worker_spec(self) -> ee_cluster.WorkerSpec:
        if self._spec is None:
            self._spec = ee_cluster.worker_spec(self)
        return self._spec

    def _submit(self, image: ee.Image, grid: Grid, windows: list[Window], **kw: Any) -> TaskStream:
        assert self.executor is not None
        return ee_cluster.submit(self.executor, self._worker_spec(), self.stats, image, grid, windows, **kw)

    def _consume(self, stream: TaskStream) -> Iterator[Block]:
        return ee_cluster.consume(self.stats, stream)

    def embedding_preview(self, plan: PreviewPlan, year: int) -> np.ndarray:
        """The year's embedding picture: float32 (3, rows, cols) of PREVIEW_BANDS on the picture's own grid,
        NaN where masked. One computePixels request (the picture is at most THUMBNAIL_SIDE² px × 3 float
        bands, far below the request limits). Earth Engine computes at the requested grid's scale, reading
        its pyramid level nearest that scale (developers.google.com/earth-engine/guides/scale), so the
        values are of a coarser level than the AEF copy's nearest full-resolution samples."""
        area = _area(plan.grid)
        image = self._year(year).filterBounds(area).mosaic().select(list(PREVIEW_BANDS))
        image = image.unmask(NODATA_SENTINEL, False).toFloat()
        picture = plan.picture_grid
        download = self._downloader(image, picture, bands=PREVIEW_BANDS, dtype="float32")
        blocks = list(download.run([Window(0, 0, picture.width, picture.height)]))
        return blocks[0][1]

    def context_windows(self, grid: Grid) -> list[Window]:
        """Tiles for the 3-band uint16 context requests: the configured tile size, within their limit."""
        return list(grid.windows(min(self.tile_size, CONTEXT_TILE_SIZE)))

    def context(self, grid: Grid, year: int, windows: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
        """The year's cloud-masked median Sentinel-2 composite: (3, rows, cols) uint16 DN of B4, B3, B2,
        0 where no clear observation; tiled, parallel, retried and split like ``compute``."""
        self._activate()
        image = ee_s2.context_image(year, _area(grid), self.s2_max_cloudy_percent)
        if self._remote():
            return self._consume(self._submit(image, grid, windows, bands=S2_RGB_BANDS, dtype="uint16"))
        return self._downloader(image, grid, bands=S2_RGB_BANDS, dtype="uint16").run(windows)

    def _downloader(self, image: ee.Image, grid: Grid, **kw: Any) -> TileDownloader:
        return TileDownloader(
            image,
            grid,
            self.stats,
            self.max_concurrency,
            min_tile_size=self.min_tile_size,
            retry_attempts=self.retry_attempts,
            backoff_s=self.backoff_s,
            **kw,
        )

    # --- expressions ----------------------------------------------------------------------------------

    def _year(self, year: int) -> ee.ImageCollection:
        return ee.ImageCollection(self.collection).filterDate(f"{year}-01-01", f"{year + 1}-01-01")

    def expression(self, grid: Grid, from_year: int, to_year: int, method: str) -> ee.Image:
        """The method as an EE image: one float band ``change``, masked pixels set to NODATA_SENTINEL."""
        known = sorted({*METHODS, S2_METHOD})
        if method not in known:
            raise ConfigError(f"method '{method}': Earth Engine computes {', '.join(known)}")
        area = _area(grid)
        if method == S2_METHOD:
            change = ee_s2.difference(from_year, to_year, area, self.s2_max_cloudy_percent)
            return change.rename(ee_tiles.BAND).unmask(NODATA_SENTINEL, False).toFloat()

        def mosaic(year: int) -> ee.Image:
            return self._year(year).filterBounds(area).mosaic().select(BAND_NAMES)

        dot = mosaic(from_year).multiply(mosaic(to_year)).reduce(ee.Reducer.sum()).clamp(-1, 1)
        if method == "cosine":
            change = ee.Image.constant(1).subtract(dot)
        else:  # angle
            change = dot.acos().divide(ee.Image.constant(3.141592653589793))
        return change.rename(ee_tiles.BAND).unmask(NODATA_SENTINEL, False).toFloat()


def describe_version(props: dict[str, Any]) -> str:
    """ "version 1.0, system:version 1722016811296000 (2024-07-26T18:00:11Z)" from a collection's properties
    (either part left out when absent)."""
    parts = []
    if props.get("version") not in (None, ""):
        parts.append(f"version {props['version']}")
    stamp = props.get("system:version")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        when = datetime.fromtimestamp(stamp / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(f"system:version {int(stamp)} ({when})")
    return ", ".join(parts)


def _area(grid: Grid) -> ee.Geometry:
    """The grid's footprint in WGS84, for filterBounds."""
    return ee.Geometry(mapping(to_crs(_box(grid), grid.crs, "EPSG:4326")))


def _box(grid: Grid) -> BaseGeometry:
    return box(*grid.bounds).segmentize(max(grid.width, grid.height) * abs(grid.transform.a) / 16)


def _quiet_data_catalog(url: str) -> None:
    """ee.Initialize fetches Google's data catalog (deprecation warnings) with no timeout: bound it, and skip
    it for non-Google endpoints (a stand-in, offline)."""
    deprecation = getattr(ee, "deprecation", None)
    if deprecation is None or not hasattr(deprecation, "_FetchDataCatalogStac"):
        return
    if not is_google(url):
        deprecation._FetchDataCatalogStac = lambda: {}
        return
    catalog_url = getattr(deprecation, "_DEPRECATED_ASSETS_URL", None)

    def fetch() -> dict:
        if not catalog_url:
            return {}
        try:
            with urllib.request.urlopen(catalog_url, timeout=DATA_CATALOG_TIMEOUT_S) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    deprecation._FetchDataCatalogStac = fetch
