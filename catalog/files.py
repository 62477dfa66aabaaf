"""Facts read from the product files (size, checksum, grid of the COG) and the JSON I/O of the catalog:
the I/O edge that keeps ``catalog.build`` pure."""

from __future__ import annotations

import ctypes
import errno
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
        raise OutputError(f"{path}: not valid JSON ({exc})") from exc
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


AT_FDCWD = -100
RENAME_EXCHANGE = 2
"""renameat2(2) flag: swap two paths atomically (Linux ≥ 3.15 on ext4, xfs, btrfs, tmpfs ...)."""


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(a))
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk, so a switch made after it never
    publishes files whose data a power loss could still drop."""
    for path in sorted(folder.iterdir()):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_folder(new: Path, target: Path) -> Path | None:
    """Put the folder ``new`` in the place of ``target`` in one step; return where the old content now is
    (to be removed by the caller), or None if there was none.

    With an existing ``target`` the two are exchanged atomically (renameat2), so a reader or a crash sees
    the whole old folder or the whole new one. Where the file system cannot exchange, the old folder is
    renamed aside first: a crash in between leaves no folder (the next run remakes it), never a mix.
    """
    if not target.exists():
        os.rename(new, target)
        return None
    try:
        _exchange(new, target)
        return new
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    aside = new.with_name(new.name + "-old")
    os.rename(target, aside)
    os.rename(new, target)
    return aside
