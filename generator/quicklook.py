"""Quicklook PNG of a change COG, and the palette shared with the catalog's ``renders``.

The PNG is read from the COG's overviews (a decimated read through ``out_shape``: GDAL picks the
overview level nearest the requested size), so it never needs the full-resolution raster in memory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling

MAX_SIDE = 1024
"""Longest side of a quicklook in pixels; smaller rasters keep their size (never upscaled)."""

RESCALE = (0.0, 0.5)
"""Change values mapped onto the palette; values above 0.5 are drawn in the last colour (red)."""

PALETTE_STOPS: list[tuple[float, tuple[int, int, int]]] = [
    (0.0, (0, 0, 0)),  # black: no change
    (0.125, (0, 0, 255)),  # blue
    (0.25, (0, 255, 255)),  # cyan
    (0.375, (255, 255, 0)),  # yellow
    (0.5, (255, 0, 0)),  # red: strong change
]
"""(change value, RGB) stops, evenly spaced over RESCALE and interpolated linearly between them."""

READ_RESAMPLING = Resampling.average
"""Resampling from the chosen overview to the quicklook size: the mean change, like the overviews."""

COLORMAP_ENTRIES = 256
"""titiler colormaps map the rescaled 0…255 byte values, so a custom colormap has 256 entries."""


def colorize(values: np.ndarray) -> np.ndarray:
    """Change values (NaN = nodata) → RGBA uint8 (rows, cols, 4), alpha 0 where nodata."""
    positions = np.array([p for p, _ in PALETTE_STOPS], dtype=np.float64)
    colours = np.array([c for _, c in PALETTE_STOPS], dtype=np.float64)
    valid = np.isfinite(values)
    v = np.where(valid, values, RESCALE[0]).astype(np.float64)
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    for channel in range(3):
        # np.interp holds the end colours beyond the first and last stop (values > 0.5 → red).
        rgba[..., channel] = np.rint(np.interp(v, positions, colours[:, channel])).astype(np.uint8)
    rgba[..., 3] = np.where(valid, 255, 0)
    rgba[~valid, :3] = 0
    return rgba


def titiler_colormap() -> dict[str, list[int]]:
    """The palette as a titiler custom colormap ({"0": [r, g, b, 255], …, "255": […]}).

    Use it with ``rescale = RESCALE`` (STAC render extension: ``"rescale": [list(RESCALE)]``,
    ``"colormap": titiler_colormap()``); keys are strings so the dict survives a JSON round trip.
    """
    lo, hi = RESCALE
    values = lo + (hi - lo) * np.arange(COLORMAP_ENTRIES) / (COLORMAP_ENTRIES - 1)
    rgba = colorize(values.reshape(1, -1))[0]
    return {str(i): [int(x) for x in rgba[i]] for i in range(COLORMAP_ENTRIES)}


def quicklook_shape(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(rows, cols) of the quicklook: aspect kept, longest side ≤ max_side, never upscaled."""
    scale = min(1.0, max_side / max(width, height))
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def write_quicklook(cog_path: Path, png_path: Path) -> None:
    """Write an RGBA PNG quicklook of band 1 of ``cog_path`` to ``png_path`` (atomically)."""
    png_path = Path(png_path)
    with rasterio.open(cog_path) as src:
        shape = quicklook_shape(src.width, src.height)
        data = src.read(1, out_shape=shape, resampling=READ_RESAMPLING, masked=True)
    values = np.ma.filled(data.astype(np.float32), np.nan)
    image = Image.fromarray(colorize(values))
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{png_path.name}-", suffix=".png", dir=png_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, png_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
