"""Content identity of a source file (an index), cheaply: what changes when its data changes."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from generator.sources.remote import HTTP_TIMEOUT_S, _s3_filesystem, scheme_of

HASH_CHUNK_BYTES = 1 << 20
USER_AGENT = "changecat"
"""Some hosts refuse Python-urllib's default User-Agent (see DESIGN.md)."""


def file_identity(href: str) -> str:
    """sha-256 of a local file; the ETag (or Last-Modified and size) of an http(s) one; size and mtime
    of an s3/gs object. Empty when the server tells nothing (the location alone identifies it then)."""
    scheme = scheme_of(href)
    try:
        if not scheme:
            digest = hashlib.sha256()
            with open(Path(href), "rb") as f:
                while chunk := f.read(HASH_CHUNK_BYTES):
                    digest.update(chunk)
            return f"sha256:{digest.hexdigest()}"
        if scheme in ("http", "https"):
            request = urllib.request.Request(href, method="HEAD", headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
                size = response.headers.get("Content-Length")
            return f"etag:{etag}" if etag else (f"http:{modified}:{size}" if modified else "")
        parts = urlsplit(href)
        fs = _s3_filesystem(parts.netloc) if scheme == "s3" else pafs.GcsFileSystem()
        info = fs.get_file_info(parts.netloc + parts.path)
        return f"{scheme}:{info.size}:{info.mtime_ns}" if info.size is not None else ""
    except (OSError, urllib.error.URLError, ValueError):
        return ""
