"""Quicklook PNGs of a change COG, drawn with the same named colormap and rescale as the catalog's
``renders`` (so titiler shows exactly what the quicklook shows).

The PNGs are read from the COG's overviews (a decimated read through ``out_shape``: GDAL picks the
overview level nearest the requested size), so they never need the full-resolution raster in memory.
Two sizes are written: a small thumbnail (≤ 256 px, STAC role ``thumbnail``, what STAC Browser shows on
item cards) and beside it an overview (≤ 1024 px, role ``overview``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rio_tiler.colormap import cmap
from rio_tiler.utils import linear_rescale

from generator.fsmode import make_public

MAX_SIDE = 1024
"""Longest side of the overview quicklook in pixels; smaller rasters keep their size (never upscaled)."""

THUMBNAIL_SIDE = 256
"""Longest side of the small thumbnail; STAC's best practices keep thumbnails under 600×600 px."""

OVERVIEW_NAME = "overview.png"
"""The overview is written beside the thumbnail under this name."""

RESCALE = (0.0, 0.5)
"""Change values mapped onto the colormap; values above 0.5 are drawn in its last colour."""

COLORMAP_NAME = "inferno"
"""A colormap that titiler/rio-tiler know by name (``colormap_name``): black for no change, through purple
and orange to light yellow for strong change; perceptually uniform and readable with colour blindness."""

READ_RESAMPLING = Resampling.average
"""Resampling from the chosen overview to the quicklook size: the mean change, like the overviews."""


def colormap_table() -> np.ndarray:
    """The named colormap as rio-tiler defines it: (256, 4) uint8 RGBA for the rescaled bytes 0…255."""
    table = cmap.get(COLORMAP_NAME)
    return np.array([table[i] for i in range(256)], dtype=np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """Change values (NaN = nodata) → RGBA uint8 (rows, cols, 4), alpha 0 where nodata.

    As titiler renders with ``rescale=RESCALE&colormap_name=COLORMAP_NAME``: rio-tiler's linear rescale
    to 0…255 (clipped, then truncated to bytes), then the colormap's entry for each byte.
    """
    valid = np.isfinite(values)
    scaled = linear_rescale(np.where(valid, values, RESCALE[0]), in_range=RESCALE, out_range=(0, 255))
    rgba = colormap_table()[scaled.astype(np.uint8)]
    rgba[~valid] = 0
    return rgba


def quicklook_shape(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(rows, cols) of the quicklook: aspect kept, longest side ≤ max_side, never upscaled."""
    scale = min(1.0, max_side / max(width, height))
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def overview_path(png_path: Path) -> Path:
    """Where ``write_quicklook`` puts the overview that goes with the thumbnail at ``png_path``."""
    return Path(png_path).with_name(OVERVIEW_NAME)


def _save_png(image: Image.Image, png_path: Path) -> None:
    """Write atomically, with the mode a plain ``open`` would give (0666 less the umask)."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{png_path.name}-", suffix=".png", dir=png_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        make_public(tmp)
        os.replace(tmp, png_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_quicklook(cog_path: Path, png_path: Path) -> None:
    """Write RGBA PNG quicklooks of band 1 of ``cog_path``: the thumbnail ``png_path`` (≤ THUMBNAIL_SIDE)
    and the overview at ``overview_path(png_path)`` (≤ MAX_SIDE), each atomically."""
    png_path = Path(png_path)
    with rasterio.open(cog_path) as src:
        images = [
            Image.fromarray(colorize(_read(src, quicklook_shape(src.width, src.height, side))))
            for side in (THUMBNAIL_SIDE, MAX_SIDE)
        ]
    _save_png(images[1], overview_path(png_path))
    _save_png(images[0], png_path)


def _read(src: rasterio.io.DatasetReader, shape: tuple[int, int]) -> np.ndarray:
    data = src.read(1, out_shape=shape, resampling=READ_RESAMPLING, masked=True)
    return np.ma.filled(data.astype(np.float32), np.nan)


CATEGORY_COLORMAP = "viridis"
"""Colormap the categories (years) are sampled from, evenly: early years dark blue, late years yellow;
perceptually ordered, so "when" reads as a progression, and readable with colour blindness."""

LEGEND_NAME = "legend.png"
"""The legend of a categorical quicklook, written beside it."""
LEGEND_SWATCH = 16
"""Side of a legend's colour square in pixels; a row is one swatch high plus padding."""


def category_palette(values: list[int]) -> dict[int, tuple[int, int, int]]:
    """One RGB colour per category value (ascending), sampled evenly from ``CATEGORY_COLORMAP``."""
    table = cmap.get(CATEGORY_COLORMAP)
    values = sorted(values)
    last = max(len(values) - 1, 1)
    return {v: tuple(int(c) for c in table[round(i * 255 / last)][:3]) for i, v in enumerate(values)}


def colorize_categories(values: np.ndarray, palette: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """Category values → RGBA uint8 (rows, cols, 4); values without a colour (nodata) are transparent."""
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    for value, rgb in palette.items():
        rgba[values == value] = (*rgb, 255)
    return rgba


WEAK_COLOR = (190, 190, 190)
"""Quicklook colour of pixels whose category carries no meaning because their value is small (a timeline's
pixels with no notable change: the earliest pair wins the tie of near-zero changes there)."""


def write_categorical_quicklook(
    cog_path: Path,
    png_path: Path,
    palette: dict[int, tuple[int, int, int]],
    labels: dict[int, str],
    weak: tuple[Path, float, str] | None = None,
) -> Path:
    """Quicklooks of a categorical COG (band 1) like ``write_quicklook`` (thumbnail ``png_path`` and the
    overview beside it), each category in its palette colour, and a legend PNG (``LEGEND_NAME`` beside
    them) with a swatch and label per category; returns the legend's path. ``weak`` = (a COG on the same
    grid, threshold, label): pixels whose value there is below the threshold are drawn in ``WEAK_COLOR``,
    with its own legend row. Categories are never averaged: reads are nearest-neighbour from overviews
    built by mode."""
    png_path = Path(png_path)
    images = []
    for side in (THUMBNAIL_SIDE, MAX_SIDE):
        with rasterio.open(cog_path) as src:
            rgba = colorize_categories(_read_nearest(src, side), palette)
        if weak is not None:
            with rasterio.open(weak[0]) as src:
                below = _read_nearest(src, side) < weak[1]  # NaN compares False: stays as it is
            rgba[below & (rgba[..., 3] > 0)] = (*WEAK_COLOR, 255)
        images.append(Image.fromarray(rgba))
    entries = [(rgb, labels.get(v, str(v))) for v, rgb in palette.items()]
    if weak is not None:
        entries.append((WEAK_COLOR, weak[2]))
    legend = png_path.with_name(LEGEND_NAME)
    _save_png(images[1], overview_path(png_path))
    _save_png(images[0], png_path)
    _save_png(draw_legend(entries), legend)
    return legend


def _read_nearest(src: rasterio.io.DatasetReader, side: int) -> np.ndarray:
    shape = quicklook_shape(src.width, src.height, side)
    return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def draw_legend(entries: list[tuple[tuple[int, int, int], str]]) -> Image.Image:
    """A small RGBA legend: one row per (colour, label), its colour square and its label, on white. The
    labels are ASCII: PIL's built-in font has no arrows or dashes."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    pad = 4
    row = LEGEND_SWATCH + pad
    width = pad * 3 + LEGEND_SWATCH + max((int(font.getlength(t)) for _, t in entries), default=0)
    image = Image.new("RGBA", (width, pad + row * len(entries)), (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, (rgb, text) in enumerate(entries):
        top = pad + i * row
        draw.rectangle([pad, top, pad + LEGEND_SWATCH - 1, top + LEGEND_SWATCH - 1], fill=(*rgb, 255))
        draw.text((pad * 2 + LEGEND_SWATCH, top + 2), text, fill=(0, 0, 0, 255), font=font)
    return image
