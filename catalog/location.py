"""Where a catalog is read from: a local folder, its ``catalog.json``, or an ``http(s)://`` URL of either.

Hrefs are strings throughout: absolute paths for local catalogs, URLs for remote ones, so ``validate`` and
``info`` walk both the same way. Remote reads have connect and read timeouts and fail with a message
naming the URL, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from catalog.files import HASH_CHUNK_BYTES, SHA256_MULTIHASH_PREFIX, sha256_multihash
from catalog.layout import CATALOG_FILE
from generator.errors import OutputError
from generator.urls import public_href

HTTP_TIMEOUT_S = 30.0
"""Connect and read timeout of every request to a remote catalog: a stalled server fails the read."""
REMOTE_SCHEMES = ("http", "https")


def is_url(href: str) -> bool:
    """Whether an href is an http(s) URL (the only remote catalogs we read)."""
    return urlsplit(href).scheme.lower() in REMOTE_SCHEMES


def is_relative(href: str) -> bool:
    """Whether an href is a relative reference (no scheme, not absolute)."""
    return not urlsplit(href).scheme and not href.startswith("/")


@dataclass(frozen=True)
class CatalogLocation:
    """A catalog's root ``catalog.json``: an absolute path or an http(s) URL."""

    root: str

    @property
    def remote(self) -> bool:
        return is_url(self.root)

    @property
    def folder(self) -> str:
        """The root's folder, as a path or a URL ending in '/'."""
        return urljoin(self.root, ".") if self.remote else str(Path(self.root).parent)

    def resolve(self, href: str, base: str) -> str:
        """``href`` as found in the document at ``base``: relative ones resolved against it."""
        if self.remote:
            return urljoin(base, href)
        if urlsplit(href).scheme == "file":
            return urlsplit(href).path
        return str((Path(base).parent / href).resolve()) if is_relative(href) else href

    def inside(self, href: str) -> bool:
        """Whether a resolved href belongs to this catalog (is a local file, or a URL under its folder)."""
        if self.remote:
            return href.startswith(self.folder)
        return not urlsplit(href).scheme or len(urlsplit(href).scheme) == 1  # one letter: a Windows drive

    def name(self, href: str) -> str:
        """How messages name a document: relative to the catalog's folder when inside it."""
        folder = self.folder if self.remote else self.folder.rstrip("/") + "/"
        return href[len(folder) :] if href.startswith(folder) else public_href(href)

    def read_json(self, href: str) -> Any:
        """The parsed JSON at ``href``; ``OSError`` when it cannot be read, ``ValueError`` when malformed."""
        return json.loads(self.read_bytes(href))

    def read_bytes(self, href: str) -> bytes:
        if not self.remote:
            return Path(href).read_bytes()
        with _open(href) as response:
            return response.read()

    def size(self, href: str) -> int | None:
        """The size of the file at ``href``, or None when there is none (missing, or no length given)."""
        if not self.remote:
            path = Path(href)
            return path.stat().st_size if path.is_file() else None
        try:
            with _open(href, method="HEAD") as response:
                length = response.headers.get("Content-Length")
        except OSError:
            return None
        return int(length) if length is not None and length.isdigit() else None

    def exists(self, href: str) -> bool:
        if not self.remote:
            return Path(href).is_file()
        try:
            with _open(href, method="HEAD"):
                return True
        except OSError:
            return False

    def multihash(self, href: str) -> str:
        """The sha2-256 multihash of the file at ``href`` (streamed)."""
        if not self.remote:
            return sha256_multihash(Path(href))
        digest = hashlib.sha256()
        with _open(href) as response:
            while chunk := response.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        return SHA256_MULTIHASH_PREFIX + digest.hexdigest()


def _open(url: str, method: str = "GET") -> Any:
    """An open response; every failure (HTTP error, refused, timed out) is an ``OSError`` naming the URL."""
    request = urllib.request.Request(url, method=method, headers={"User-Agent": "changecat"})
    try:
        return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise OSError(f"{public_href(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"{public_href(url)}: {exc.reason}") from None
    except TimeoutError:
        raise OSError(f"{public_href(url)}: timed out after {HTTP_TIMEOUT_S:g} s") from None


def catalog_location(where: str | Path) -> CatalogLocation:
    """The catalog a user named: a folder, a ``.json`` file, or an http(s) URL of either.

    Raises ``OutputError`` when a local folder holds no ``catalog.json`` or a path does not exist.
    """
    text = str(where)
    if is_url(text):
        return CatalogLocation(
            text if urlsplit(text).path.endswith(".json") else f"{text.rstrip('/')}/{CATALOG_FILE}"
        )
    path = Path(text).resolve()
    if path.is_dir():
        if not (path / CATALOG_FILE).is_file():
            raise OutputError(
                f"{where}: no {CATALOG_FILE} in this folder, so it is not a catalog; give a catalog's "
                "folder, its catalog.json or an http(s):// URL"
            )
        return CatalogLocation(str(path / CATALOG_FILE))
    if path.is_file():
        return CatalogLocation(str(path))
    raise OutputError(f"{where}: no such folder or file; give a catalog's folder, its catalog.json or a URL")


def link_hrefs(location: CatalogLocation, doc: Any, base: str, rel: str) -> list[str]:
    """Resolved hrefs of the links of ``rel`` in ``doc`` (read from ``base``) that lie in the catalog."""
    out = []
    links = doc.get("links") if isinstance(doc, dict) else None
    for link in links if isinstance(links, list) else []:
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str) and link.get("rel") == rel and is_relative(href):
            out.append(location.resolve(href, base))
    return out


def iter_items(location: CatalogLocation) -> Iterator[dict[str, Any]]:
    """Every item the root reaches through child and item links, skipping documents that cannot be read.

    Raises ``OutputError`` when the root itself cannot be read.
    """
    try:
        root = location.read_json(location.root)
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot read the catalog: {exc}") from None
    for child in link_hrefs(location, root, location.root, "child"):
        try:
            collection = location.read_json(child)
        except (OSError, ValueError):
            continue
        for href in link_hrefs(location, collection, child, "item"):
            try:
                item = location.read_json(href)
            except (OSError, ValueError):
                continue
            if isinstance(item, dict):
                yield item
