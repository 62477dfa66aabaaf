"""Quicklooks: size and aspect, palette colours, transparency at nodata, atomic writes, titiler colormap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from rasterio.errors import RasterioIOError

from generator.grid import Grid
from generator.quicklook import MAX_SIDE, PALETTE_STOPS, RESCALE, titiler_colormap, write_quicklook
from generator.raster import CogWriter

BLACK, BLUE, CYAN, YELLOW, RED = (0, 0, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0)


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
    rgba = read_png(png)
    assert rgba.shape == (3, 7, 4)
    expected = [BLACK, BLUE, CYAN, YELLOW, RED, RED]
    assert [tuple(int(c) for c in px[:3]) for px in rgba[1, :6]] == expected
    assert rgba[:, :6, 3].min() == 255
    assert rgba[:, 6, 3].max() == 0


def test_wide_raster_is_reduced_keeping_aspect(wide_cog: Path, tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    write_quicklook(wide_cog, png)
    rgba = read_png(png)
    assert rgba.shape == (round(1200 * MAX_SIDE / 2500), MAX_SIDE, 4)
    assert rgba[:, : MAX_SIDE // 2 - 1, 3].max() == 0  # nodata half transparent
    assert rgba[:, MAX_SIDE // 2 + 1 :, 3].min() == 255
    assert tuple(rgba[10, -10, :3]) == CYAN


def test_tall_raster_is_reduced_keeping_aspect(tall_cog: Path, tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    write_quicklook(tall_cog, png)
    rgba = read_png(png)
    assert rgba.shape == (MAX_SIDE, round(600 * MAX_SIDE / 2100), 4)
    assert {tuple(px) for px in rgba.reshape(-1, 4)} == {(*RED, 255)}


def test_replaces_older_png_without_temporaries(palette_cog: Path, old_png: Path) -> None:
    write_quicklook(palette_cog, old_png)
    assert read_png(old_png).shape == (3, 7, 4)
    assert sorted(p.name for p in old_png.parent.iterdir()) == ["palette.tif", "thumbnail.png"]


def test_unreadable_cog_keeps_older_png(tmp_path: Path, old_png: Path) -> None:
    with pytest.raises(RasterioIOError):
        write_quicklook(tmp_path / "missing.tif", old_png)
    assert old_png.read_bytes() == b"an older quicklook"
    assert [p.name for p in tmp_path.iterdir()] == ["thumbnail.png"]


def test_titiler_colormap_matches_palette() -> None:
    cmap = titiler_colormap()
    assert len(cmap) == 256
    assert cmap["0"] == [*BLACK, 255]
    assert cmap["255"] == [*RED, 255]
    assert json.loads(json.dumps(cmap)) == cmap
    # entry i shows the value RESCALE[0] + i/255 * span: 0.25 falls between entries 127 and 128 (cyan)
    assert cmap["127"][1] > 250 and cmap["128"][2] > 250
    assert RESCALE == (0.0, 0.5)
    assert [v for v, _ in PALETTE_STOPS] == [0.0, 0.125, 0.25, 0.375, 0.5]
