"""Quicklooks: sizes and aspect, the named colormap as titiler applies it, transparency at nodata, atomic
writes, file modes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from rasterio.errors import RasterioIOError
from rio_tiler.colormap import cmap

from generator.grid import Grid
from generator.quicklook import (
    COLORMAP_NAME,
    MAX_SIDE,
    OVERVIEW_NAME,
    RESCALE,
    THUMBNAIL_SIDE,
    write_quicklook,
)
from generator.raster import CogWriter

INFERNO = cmap.get("inferno")
"""rio-tiler's table, which titiler applies for ``colormap_name=inferno`` to the rescaled bytes."""


def colour(byte: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in INFERNO[byte][:3])


def write_cog(path: Path, values: np.ndarray) -> Path:
    """A real product COG of the given whole-grid values, written block by block."""
    rows, cols = values.shape
    grid = Grid("EPSG:32633", Affine(10, 0, 400000, 0, -10, 5800000), cols, rows)
    with CogWriter(path, grid) as writer:
        for w in grid.windows():
            writer.write(w, values[w.toslices()])
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im)


@pytest.fixture
def palette_cog(tmp_path: Path) -> Path:
    """Small raster (kept at full size): columns at 0, 1/8, 1/4, 3/8, 1/2, 0.9, NaN."""
    row = np.array([0.0, 0.125, 0.25, 0.375, 0.5, 0.9, np.nan], np.float32)
    return write_cog(tmp_path / "palette.tif", np.tile(row, (3, 1)))


@pytest.fixture
def wide_cog(tmp_path: Path) -> Path:
    """Wider than MAX_SIDE, with overviews; the left half is nodata."""
    values = np.full((1200, 2500), 0.25, np.float32)
    values[:, :1250] = np.nan
    return write_cog(tmp_path / "wide.tif", values)


@pytest.fixture
def tall_cog(tmp_path: Path) -> Path:
    return write_cog(tmp_path / "tall.tif", np.full((2100, 600), 0.5, np.float32))


@pytest.fixture
def old_png(tmp_path: Path) -> Path:
    path = tmp_path / "thumbnail.png"
    path.write_bytes(b"an older quicklook")
    return path


def test_small_raster_keeps_size_and_colours(palette_cog: Path, tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    write_quicklook(palette_cog, png)
    for path in (png, tmp_path / OVERVIEW_NAME):
        rgba = read_png(path)
        assert rgba.shape == (3, 7, 4)
        # titiler: (v - 0) / 0.5 * 255, clipped, truncated to a byte → 0, 63, 127, 191, 255, 255
        expected = [colour(b) for b in (0, 63, 127, 191, 255, 255)]
        assert [tuple(int(c) for c in px[:3]) for px in rgba[1, :6]] == expected
        assert rgba[:, :6, 3].min() == 255
        assert rgba[:, 6, 3].max() == 0
    assert COLORMAP_NAME == "inferno" and RESCALE == (0.0, 0.5)
    assert colour(0) == (0, 0, 3) and colour(255) == (252, 254, 164)  # near-black → light yellow


def test_wide_raster_is_reduced_keeping_aspect(wide_cog: Path, tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    write_quicklook(wide_cog, png)
    for path, side in ((tmp_path / OVERVIEW_NAME, MAX_SIDE), (png, THUMBNAIL_SIDE)):
        rgba = read_png(path)
        assert rgba.shape == (round(1200 * side / 2500), side, 4)
        assert rgba[:, : side // 2 - 1, 3].max() == 0  # nodata half transparent
        assert rgba[:, side // 2 + 1 :, 3].min() == 255
        assert tuple(rgba[10, -10, :3]) == colour(127)


def test_tall_raster_is_reduced_keeping_aspect(tall_cog: Path, tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    write_quicklook(tall_cog, png)
    for path, side in ((tmp_path / OVERVIEW_NAME, MAX_SIDE), (png, THUMBNAIL_SIDE)):
        rgba = read_png(path)
        assert rgba.shape == (side, round(600 * side / 2100), 4)
        assert {tuple(px) for px in rgba.reshape(-1, 4)} == {(*colour(255), 255)}


def test_replaces_older_png_without_temporaries(palette_cog: Path, old_png: Path) -> None:
    write_quicklook(palette_cog, old_png)
    assert read_png(old_png).shape == (3, 7, 4)
    assert sorted(p.name for p in old_png.parent.iterdir()) == [
        "overview.png",
        "palette.tif",
        "thumbnail.png",
    ]


def test_unreadable_cog_keeps_older_png(tmp_path: Path, old_png: Path) -> None:
    with pytest.raises(RasterioIOError):
        write_quicklook(tmp_path / "missing.tif", old_png)
    assert old_png.read_bytes() == b"an older quicklook"
    assert [p.name for p in tmp_path.iterdir()] == ["thumbnail.png"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_png_modes_follow_the_umask(palette_cog: Path, tmp_path: Path, umask: int) -> None:
    """mkstemp makes 0600 files: a web server running as another user answered 404 for them."""
    old = os.umask(umask)
    try:
        write_quicklook(palette_cog, tmp_path / "q.png")
    finally:
        os.umask(old)
    for name in ("q.png", OVERVIEW_NAME):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
