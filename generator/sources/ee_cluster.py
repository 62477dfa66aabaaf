"""Earth Engine tiles downloaded by the workers of a dask cluster.

Each tile is one task: the worker initializes its own earthengine-api client (once per run and worker)
with the run's endpoint, project and credentials, rebuilds the expression from its serialized form and
downloads the tile with the same ``TileDownloader.fetch`` as a local run (retries, splits). The run's
``max_concurrency`` is held across all workers together by a ``distributed.Semaphore`` with that many
leases, taken around each tile ("A semaphore ... can be used to limit access to a resource, e.g. an
external database, across the whole cluster", distributed's docs, Synchronization/Semaphore). The
request counts of each tile come back with its values and are added to the source's statistics in the
writing process when the tile is consumed, so each product counts its own requests as in a local run.

Credentials travel inside ``cluster.Secret`` (pickled to the worker, never shown by a repr, so dask's
log of a failed task's arguments does not contain them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import partial
from typing import TYPE_CHECKING, Any

import ee
import numpy as np
from rasterio.windows import Window

from generator.cluster import Executor, Secret, TaskStream, worker_address
from generator.errors import ChangecatError, SourceError
from generator.grid import Grid
from generator.sources.ee_tiles import BAND, DownloadStats, TileDownloader
from generator.urls import public_href

if TYPE_CHECKING:
    from generator.sources.earthengine import EarthEngineSource

COUNTED = ("requests", "failed_requests", "retries", "splits", "bytes")
"""DownloadStats counters a tile task reports back (besides the sizes of its requests)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to talk to Earth Engine as the run does; ``key`` names one run's source."""

    key: str
    project: str
    collection: str
    url: str
    max_concurrency: int
    tile_size: int
    min_tile_size: int
    client_retries: int
    retry_attempts: int
    backoff_s: float
    s2_max_cloudy_percent: float | None
    deadline_s: float
    credentials: Secret
    semaphore: Any  # distributed.Semaphore with max_concurrency leases, shared by all workers


def worker_spec(source: EarthEngineSource) -> WorkerSpec:
    """The spec of a source for its run on a cluster (one semaphore per source, made once)."""
    from distributed import Semaphore

    key = f"changecat-ee-{uuid.uuid4().hex}"
    return WorkerSpec(
        key=key,
        project=source.project,
        collection=source.collection,
        url=source.url,
        max_concurrency=source.max_concurrency,
        tile_size=source.tile_size,
        min_tile_size=source.min_tile_size,
        client_retries=source.client_retries,
        retry_attempts=source.retry_attempts,
        backoff_s=source.backoff_s,
        s2_max_cloudy_percent=source.s2_max_cloudy_percent,
        deadline_s=source.deadline_s,
        credentials=Secret(source._credentials),
        semaphore=Semaphore(max_leases=source.max_concurrency, name=key),
    )


_sources: dict[str, EarthEngineSource] = {}
_lock = threading.Lock()


def worker_ee(spec: WorkerSpec) -> EarthEngineSource:
    """This worker's source for the run ``spec`` names, opened once; a failure names worker and endpoint."""
    from generator.sources.earthengine import EarthEngineSource

    with _lock:
        if spec.key not in _sources:
            try:
                _sources[spec.key] = EarthEngineSource(
                    spec.project,
                    spec.collection,
                    spec.url,
                    spec.max_concurrency,
                    credentials=spec.credentials.value,
                    tile_size=spec.tile_size,
                    min_tile_size=spec.min_tile_size,
                    client_retries=spec.client_retries,
                    retry_attempts=spec.retry_attempts,
                    backoff_s=spec.backoff_s,
                    s2_max_cloudy_percent=spec.s2_max_cloudy_percent,
                    deadline_s=spec.deadline_s,
                )
            except ChangecatError as exc:
                error = type(exc)(
                    f"worker {worker_address()} cannot reach Earth Engine at {public_href(spec.url)}: {exc}"
                )
            else:
                return _sources[spec.key]
        else:
            return _sources[spec.key]
    raise error  # outside the except block: no chained error that the client could not unpickle


def check_worker(spec: WorkerSpec) -> None:
    """Run on every worker before a cluster run: the worker's client initializes against the endpoint."""
    worker_ee(spec)


def submit(
    executor: Executor,
    spec: WorkerSpec,
    stats: DownloadStats,
    image: ee.Image,
    grid: Grid,
    windows: list[Window],
    bands: tuple[str, ...] = (BAND,),
    dtype: str = "float32",
) -> TaskStream:
    """The tiles as tasks on the cluster, in order, at most max_concurrency + the cluster's threads
    outstanding (each holds one tile's values on its worker until consumed)."""
    task = partial(tile_task, spec, image.serialize(), grid, bands, dtype)
    with stats.lock:
        stats.tiles_total += len(windows)
    return executor.map(task, windows, ahead=spec.max_concurrency + executor.threads())


def consume(stats: DownloadStats, stream: TaskStream) -> Iterator[tuple[Window, np.ndarray]]:
    """Tiles as they are consumed, their request counts added to the source's statistics."""
    try:
        for window, values, counts in stream:
            stats.add(tiles_done=1, **counts)
            yield window, values
    finally:
        stream.cancel()


def tile_task(
    spec: WorkerSpec, expression: str, grid: Grid, bands: tuple[str, ...], dtype: str, window: Window
) -> tuple[Window, np.ndarray, dict[str, Any]]:
    """One tile of a serialized expression: (window, values, the request counts it took)."""
    source = worker_ee(spec)
    stats = DownloadStats()
    with spec.semaphore:
        source._activate()
        downloader = TileDownloader(
            ee.deserializer.fromJSON(expression),
            grid,
            stats,
            1,
            min_tile_size=spec.min_tile_size,
            retry_attempts=spec.retry_attempts,
            backoff_s=spec.backoff_s,
            bands=bands,
            dtype=dtype,
        )
        error = None
        try:
            values = downloader.fetch(window)
        except SourceError as exc:
            error = type(exc)(f"worker {worker_address()}: {exc}")
    if error is not None:
        raise error  # outside the except block: no chained client error that could not be unpickled
    counts: dict[str, Any] = {f.name: getattr(stats, f.name) for f in fields(stats) if f.name in COUNTED}
    counts["request_sizes"] = list(stats.request_sizes)
    return window, values, counts
