"""Where AEF files live: local folders, http(s), s3 and gs URLs → GDAL paths, GDAL options, index bytes.

Credentials come from the standard environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS) and
are read by GDAL and pyarrow themselves; nothing here logs or returns them.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from generator.errors import SourceError
from generator.urls import public_href

URL_SCHEMES = ("http", "https", "s3", "gs")
GDAL_PREFIX = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
HTTP_TIMEOUT_S = 60
"""Timeout of one HTTP request for the index."""
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


def read_parquet(href: str, columns: list[str]) -> pa.Table:
    """Read some columns of a Parquet file from a local path or an http(s)/s3/gs URL.

    Raises ``SourceError`` naming the (public) href when it is missing or unreadable.
    """
    scheme, shown = scheme_of(href), public_href(href)
    try:
        if scheme in ("http", "https"):
            with urllib.request.urlopen(href, timeout=HTTP_TIMEOUT_S) as response:
                data = response.read()
            return pq.read_table(pa.BufferReader(data), columns=columns)
        if scheme == "s3":
            parts = urlsplit(href)
            fs = _s3_filesystem(parts.netloc)
            return pq.read_table(parts.netloc + parts.path, columns=columns, filesystem=fs)
        if scheme == "gs":
            parts = urlsplit(href)
            fs = pafs.GcsFileSystem(anonymous=_truthy("GS_NO_SIGN_REQUEST"))
            return pq.read_table(parts.netloc + parts.path, columns=columns, filesystem=fs)
        if not Path(href).is_file():
            raise SourceError(
                f"AEF index not found: {shown} does not exist (an AEF root holds aef_index.parquet "
                "next to its {year}/ folders)"
            )
        return pq.read_table(href, columns=columns)
    except SourceError:
        raise
    except urllib.error.HTTPError as exc:
        raise SourceError(f"AEF index {shown} could not be fetched: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"AEF index {shown} could not be read: {_short(exc)}") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError) as exc:
        raise SourceError(
            f"AEF index {shown} is not a GeoParquet index with columns {', '.join(columns)}: {_short(exc)}"
        ) from None


def _short(exc: BaseException) -> str:
    """The first line of an exception message (long AWS/GDAL messages carry request details)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
