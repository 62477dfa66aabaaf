"""Path length limits of the filesystem and of GDAL, checked before writing so that a too-long output path
gives one clear error naming the limit instead of a failure deep inside GDAL or the OS."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from generator.errors import OutputError

GDAL_PATH_BUFFER = 2048
"""GDAL forms file names (sidecars such as ``.aux.xml``, ``.ovr``, ``.msk``) in buffers of this many bytes
including the final NUL (``CPL_PATH_BUF_SIZE`` in GDAL's cpl_path.cpp); longer paths fail deep inside
GDAL with "Destination buffer too small" (seen from rio-cogeo's temporary file at 2040+ bytes)."""
GDAL_SIDECAR_SUFFIX = ".aux.xml"
"""The longest suffix GDAL appends to a dataset path when it looks for sidecar files."""
GDAL_PATH_MAX = GDAL_PATH_BUFFER - 2 - len(GDAL_SIDECAR_SUFFIX)
"""Longest dataset path GDAL handles without "Destination buffer too small": 2038 bytes. Measured with
GDAL 3.10 (building overviews, the step that looks for sidecars): 2038 works, 2039 fails, i.e. the
path, the suffix, the NUL and one more byte must fit the buffer."""
NAME_MAX = 255
"""Bytes per path component on Linux filesystems (NAME_MAX); the folder's own value is asked first."""
PATH_MAX = 4096
"""Bytes of a whole path including the NUL on Linux (PATH_MAX); the folder's own value is asked first."""


def _limit(folder: Path, name: str, fallback: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return fallback


def _size(path: PurePath | str) -> int:
    return len(os.fsencode(path))


def check_path_length(path: Path, scratch: PurePath) -> None:
    """Raise ``OutputError`` when ``path`` cannot be written through GDAL with ``scratch`` (the longest
    temporary made beside it, relative to its folder): a component longer than NAME_MAX, or a path longer
    than PATH_MAX or than GDAL's file name buffer allows (with room for a sidecar suffix)."""
    path = Path(path).absolute()
    name_max = _limit(path.parent, "PC_NAME_MAX", NAME_MAX)
    path_max = _limit(path.parent, "PC_PATH_MAX", PATH_MAX)
    for part in scratch.parts:
        if _size(part) > name_max:
            allowed = name_max - (_size(part) - _size(path.name))
            raise OutputError(
                f"{path}: the file name '{path.name}' is too long: the temporary '{part}' beside it needs "
                f"{_size(part)} bytes and a file name may have at most {name_max} (NAME_MAX); "
                f"use a file name of at most {allowed} bytes"
            )
    extra = _size(path.parent / scratch) - _size(path)
    allowed = min(GDAL_PATH_MAX, path_max - 1) - extra
    if _size(path) > allowed:
        raise OutputError(
            f"{path}: the path is {_size(path)} bytes long; GDAL handles paths up to {GDAL_PATH_MAX} bytes "
            f"(its {GDAL_PATH_BUFFER}-byte file name buffer, with room for its '{GDAL_SIDECAR_SUFFIX}' "
            f"sidecars) and the filesystem up to {path_max - 1} (PATH_MAX), and the writer's temporary "
            f"files add {extra}: "
            f"this file's path may have at most {allowed} bytes: choose a shorter output folder"
        )
