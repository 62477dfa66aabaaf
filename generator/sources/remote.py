"""Where AEF files live: local folders, http(s), s3 and gs URLs → GDAL paths, GDAL options, index bytes
(http(s) through fsspec with changecat's User-Agent, s3/gs through pyarrow's filesystems).

Credentials come from the standard environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS) and
are read by GDAL and pyarrow themselves; nothing here logs or returns them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from generator.errors import SourceError
from generator.urls import public_href

URL_SCHEMES = ("http", "https", "s3", "gs")
GDAL_PREFIX = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
HTTP_TIMEOUT_S = 300
"""Timeout of one HTTP request for the index (the public index is about 78 MB, read in one request)."""
try:
    USER_AGENT = f"changecat/{version('changecat')}"
except PackageNotFoundError:  # a source tree that was not installed
    USER_AGENT = "changecat/0.0.0"
"""Sent with every HTTP request for the index, and to GDAL (GDAL_HTTP_USERAGENT) for the tiles: the Source
Cooperative host refuses Python-urllib's default User-Agent."""
GDAL_HTTP_MAX_RETRY = 3
"""Retries GDAL makes itself on HTTP 429/5xx and some connection errors (our reader retries the rest)."""
GDAL_HTTP_RETRY_DELAY_S = 1
CONNECT_TIMEOUT_S = 15
"""Seconds to open a connection (GDAL_HTTP_CONNECTTIMEOUT)."""
STALL_TIMEOUT_S = 30
"""A transfer that delivers less than ``STALL_MIN_BYTES_PER_S`` for this long is abandoned
(GDAL_HTTP_LOW_SPEED_TIME): a stalled server fails the read instead of hanging the run."""
STALL_MIN_BYTES_PER_S = 1
REQUEST_TIMEOUT_S = 600
"""Upper bound on one HTTP request (GDAL_HTTP_TIMEOUT): merged ranges of a 1024-px block of 64 bands are
about 64 MB, so this allows ~100 kB/s; slower links should raise it."""
READ_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL's block cache while reading (GDAL_CACHEMAX): each block is decoded once and copied out at once,
so caching more only costs memory (GDAL's default is 5 % of RAM)."""
HEADER_BYTES = 65536
"""Bytes fetched with the first request of a file (GDAL_INGESTED_BYTES_AT_OPEN): the IFDs of the AEF COGs
(64 bands × 64 blocks × 2 arrays × 8 bytes per level) fit, saving round trips."""


def scheme_of(href: str) -> str:
    """ "http", "https", "s3", "gs", or "" for a local path."""
    scheme = urlsplit(href).scheme.lower()
    return scheme if scheme in URL_SCHEMES else ""


def join(root: str, relative: str) -> str:
    """``relative`` resolved against ``root`` (kept as is when it is already an absolute URL or path)."""
    if scheme_of(relative) or Path(relative).is_absolute():
        return relative
    if scheme_of(root):
        return root.rstrip("/") + "/" + relative.lstrip("/")
    return str(Path(root) / relative)


def gdal_path(href: str) -> str:
    """The GDAL virtual file system path of a URL (/vsicurl/, /vsis3/, /vsigs/) or a local path."""
    scheme = scheme_of(href)
    if not scheme:
        return href
    if scheme in ("http", "https"):
        return GDAL_PREFIX[scheme] + href
    parts = urlsplit(href)
    return GDAL_PREFIX[scheme] + parts.netloc + parts.path


def _s3_endpoint() -> str | None:
    """The custom S3 endpoint, as boto3 reads it (service-specific variable first)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("YES", "TRUE", "ON", "1")


def gdal_options() -> dict[str, str | int]:
    """GDAL config options for reading the mirror: few directory listings, retries, the S3 endpoint.

    AWS_ENDPOINT_URL (boto3's variable) is mapped to GDAL's AWS_S3_ENDPOINT / AWS_HTTPS /
    AWS_VIRTUAL_HOSTING so a local S3 server works; the other AWS_* variables GDAL reads itself.
    """
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": str(GDAL_HTTP_MAX_RETRY),
        "GDAL_HTTP_RETRY_DELAY": str(GDAL_HTTP_RETRY_DELAY_S),
        "GDAL_HTTP_CONNECTTIMEOUT": str(CONNECT_TIMEOUT_S),
        "GDAL_HTTP_LOW_SPEED_TIME": str(STALL_TIMEOUT_S),
        "GDAL_HTTP_LOW_SPEED_LIMIT": str(STALL_MIN_BYTES_PER_S),
        "GDAL_HTTP_TIMEOUT": str(REQUEST_TIMEOUT_S),
        # Headers and directory facts of the files, kept for the life of the process.
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_INGESTED_BYTES_AT_OPEN": str(HEADER_BYTES),
        # Ranges of one read (e.g. a block's tiles of every band) fetched in parallel, over HTTP/2 when the
        # server offers it; consecutive ranges are merged into one request.
        "GDAL_HTTP_MULTIPLEX": "YES",
        "GDAL_HTTP_VERSION": "2TLS",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        # No per-handle VSI_CACHE (25 MB each by default): each block is read once, files stay open for
        # the job, and /vsicurl/ keeps its own cache of headers; measured 4-7 % faster locally without it.
        "GDAL_CACHEMAX": READ_CACHE_BYTES,  # an int: rasterio sets it with GDALSetCacheMax64
    }
    # GDAL's own variables set in the environment win over ours (e.g. a longer timeout for a slow link).
    options = {k: v for k, v in options.items() if k not in os.environ}
    endpoint = _s3_endpoint()
    if endpoint and "AWS_S3_ENDPOINT" not in os.environ:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["AWS_S3_ENDPOINT"] = parts.netloc
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return options


def http_timeouts() -> dict[str, float]:
    """The effective connect and stall timeouts in seconds (ours, or GDAL's variables when set)."""
    return {
        "connect_s": float(os.environ.get("GDAL_HTTP_CONNECTTIMEOUT", CONNECT_TIMEOUT_S)),
        "read_s": float(os.environ.get("GDAL_HTTP_LOW_SPEED_TIME", STALL_TIMEOUT_S)),
    }


def _s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    kwargs: dict = {}
    if _truthy("AWS_NO_SIGN_REQUEST"):
        kwargs["anonymous"] = True
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = _s3_endpoint()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    elif not region:
        region = pafs.resolve_s3_region(bucket)
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def arrow_filesystem(href: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for an s3:// or gs:// URL (configured from the standard environment) and the
    path in it."""
    parts = urlsplit(href)
    if scheme_of(href) == "s3":
        return _s3_filesystem(parts.netloc), parts.netloc + parts.path
    return pafs.GcsFileSystem(anonymous=_truthy("GS_NO_SIGN_REQUEST")), parts.netloc + parts.path


def http_filesystem() -> fsspec.AbstractFileSystem:
    """fsspec's HTTP filesystem sending changecat's User-Agent, with a timeout per request and the proxy
    variables honoured (HTTPS_PROXY, NO_PROXY), as GDAL honours them for the tiles."""
    return fsspec.filesystem(
        "http",
        headers={"User-Agent": USER_AGENT},
        client_kwargs={"timeout": aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S), "trust_env": True},
        skip_instance_cache=True,
    )


def read_parquet(href: str, columns: list[str] | Callable[[pa.Schema], list[str]]) -> pa.Table:
    """Read some columns of a Parquet file from a local path or an http(s)/s3/gs URL; ``columns`` may be
    a function choosing them from the file's schema (with its metadata).

    Raises ``SourceError`` naming the (public) href when it is missing or unreadable.
    """
    scheme, shown = scheme_of(href), public_href(href)
    try:
        if scheme in ("http", "https"):
            source: Any = pa.BufferReader(http_filesystem().cat_file(href))
        elif scheme in ("s3", "gs"):
            fs, path = arrow_filesystem(href)
            source = fs.open_input_file(path)
        elif not Path(href).is_file():
            raise SourceError(
                f"AEF index not found: {shown} does not exist (an AEF root holds aef_index.parquet "
                "next to its {year}/ folders)"
            )
        else:
            source = href
        parquet = pq.ParquetFile(source)
        wanted = columns(parquet.schema_arrow) if callable(columns) else columns
        return parquet.read(columns=wanted)
    except SourceError:
        raise
    except aiohttp.ClientResponseError as exc:
        status = f"HTTP {exc.status} {exc.message}"
        raise SourceError(f"AEF index {shown} could not be fetched: {status}") from None
    except FileNotFoundError:
        why = "HTTP 404 Not Found" if scheme in ("http", "https") else "no such file"
        raise SourceError(f"AEF index {shown} could not be fetched: {why}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SourceError(f"AEF index {shown} could not be read: {_short(exc)}") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError) as exc:
        raise SourceError(f"AEF index {shown} is not a GeoParquet index: {_short(exc)}") from None


def file_info(href: str) -> dict[str, Any]:
    """What identifies a file's version: ``etag`` (http), ``size`` and ``mtime`` (ISO, UTC) where known."""
    scheme = scheme_of(href)
    if scheme in ("http", "https"):
        info = http_filesystem().info(href)
        etag = str(info.get("ETag") or "").removeprefix("W/").strip('"')
        return {"etag": etag, "size": info.get("size")}
    if scheme in ("s3", "gs"):
        fs, path = arrow_filesystem(href)
        stat = fs.get_file_info(path)
        mtime = stat.mtime.astimezone(UTC).isoformat(timespec="seconds") if stat.mtime else None
        return {"size": stat.size, "mtime": mtime}
    stat = os.stat(href)
    return {"size": stat.st_size, "mtime": datetime.fromtimestamp(stat.st_mtime, tz=UTC).isoformat()[:19]}


def _short(exc: BaseException) -> str:
    """The first line of an exception message (long AWS/GDAL messages carry request details)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
