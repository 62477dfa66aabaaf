"""Facts read from the product files (size, checksum, grid of the COG) and the JSON I/O of the catalog:
the I/O edge that keeps ``catalog.build`` pure."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from generator.errors import OutputError
from generator.fsmode import make_public

HASH_CHUNK_BYTES = 1 << 20
"""Files are hashed in 1 MiB chunks, so memory stays flat whatever the file size."""

SHA256_MULTIHASH_PREFIX = "1220"
"""Multihash header of sha2-256 (code 0x12, length 0x20 = 32 bytes), as file:checksum wants it."""


@dataclass(frozen=True)
class FileFacts:
    """``file:size`` and ``file:checksum`` of one asset."""

    size: int
    checksum: str  # multihash hex


@dataclass(frozen=True)
class RasterFacts:
    """The grid of a single-band raster, for the projection and raster fields of its asset."""

    code: str  # "EPSG:32633"
    shape: tuple[int, int]  # (rows, cols)
    transform: tuple[float, ...]  # 6 affine coefficients a, b, c, d, e, f
    data_type: str
    resolution: float  # metres (mean of |x| and |y| pixel size)


def sha256_multihash(path: Path) -> str:
    """sha2-256 of a file as multihash hex ("1220" + hex digest), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return SHA256_MULTIHASH_PREFIX + digest.hexdigest()


def file_facts(path: Path) -> FileFacts:
    try:
        return FileFacts(size=path.stat().st_size, checksum=sha256_multihash(path))
    except OSError as exc:
        raise OutputError(f"{path}: cannot read the product file ({exc.strerror or exc})") from exc


def raster_facts(path: Path) -> RasterFacts:
    """Read the CRS, shape, transform and data type of a raster's first band."""
    try:
        with rasterio.open(path) as ds:
            epsg = ds.crs.to_epsg() if ds.crs else None
            if epsg is None:
                raise OutputError(
                    f"{path}: the raster has no EPSG-coded CRS; changecat writes UTM (EPSG:326xx)"
                )
            t = ds.transform
            return RasterFacts(
                code=f"EPSG:{epsg}",
                shape=(ds.height, ds.width),
                transform=tuple(float(v) for v in list(t)[:6]),
                data_type=ds.dtypes[0],
                resolution=(abs(t.a) + abs(t.e)) / 2,
            )
    except RasterioIOError as exc:
        raise OutputError(f"{path}: cannot open the change raster ({exc})") from exc


def read_json(path: Path) -> dict[str, Any]:
    """Parse a catalog JSON file; ``OutputError`` names the file when it is unreadable or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OutputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not valid JSON ({exc}); delete the catalog folder to rebuild it") from exc
    if not isinstance(data, dict):
        raise OutputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path``, fsync it, then rename over ``path``.

    Readers see the old file or the new one, never a partial one; no temporary file is left on failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        make_public(tmp)  # mkstemp makes 0600; a plain open() would follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
