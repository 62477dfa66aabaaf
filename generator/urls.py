"""URLs made safe to show or publish: no user:password, no query string (signatures, tokens), no fragment."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def public_href(href: str) -> str:
    """``href`` without user:password, query string or fragment; a local path is returned unchanged."""
    parts = urlsplit(href)
    if "://" not in href or not parts.scheme:
        return href
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str) -> str:
    """Every URL in a message (e.g. one GDAL or a client library wrote) made public with ``public_href``."""
    return _URL.sub(lambda m: public_href(m.group(0)), text)
