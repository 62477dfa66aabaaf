"""Overview levels and tile sizes that make a COG of any grid shape pass rio-cogeo's strict validation.

Pure functions of the grid's width and height; ``generator.raster`` writes what they say.

Why tile sizes vary: ``rio_cogeo.cogeo.cog_validate`` has no access to the TIFF tiling tags and calls an
image level "not tiled" when its block width equals its width (``block_shapes[0][1] == width``), for every
level larger than 512 px in either direction. A correctly *tiled* level that is exactly one tile wide and
taller than 512 px (a 512 × 800 grid, or the 512 × 1025 overview of a 2048 × 2049 grid) therefore fails
with "... is not tiled". The tile side is a free choice, so we pick, separately for the full-resolution
image and for the overviews, the first size from ``TILE_SIZES`` that no checked level is exactly as wide as.
"""

from __future__ import annotations

from generator.grid import BLOCK_SIZE

VALIDATOR_MIN_SIDE = 512
"""rio-cogeo checks tiling and asks for overviews only on levels wider or taller than this (cogeo.py)."""

TILE_SIZES = (BLOCK_SIZE, 1024, 256, 2048, 128, 4096, 64)
"""Tile sides to choose from, most preferred first. Powers of two from 64 to 4096: the range GDAL accepts
for GDAL_TIFF_OVR_BLOCKSIZE (GDAL GTiff driver documentation, "Configuration options")."""


def overview_levels(width: int, height: int) -> int:
    """Halvings until the longest side fits one block: rio-cogeo's default stops at the *shortest*
    side, which leaves e.g. a 700×300 raster without overviews, and such a COG fails strict validation.

    A raster one pixel wide gets none: its overviews are one pixel wide too, rasterio reports their
    decimation as width ratio 1/1 = 1, and rio-cogeo rejects every such level ("Invalid Decimation 1").
    Such a raster taller than 512 px cannot pass strict validation at all (see ``expected_warnings``).
    """
    if width == 1:
        return 0
    levels = 0
    while max(width, height) > BLOCK_SIZE * 2**levels:
        levels += 1
    return levels


def level_shapes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of the full-resolution image and of each overview GDAL's GTiff driver builds for
    factors 2, 4, 8, …: ``ceil(side / factor)`` (GDAL's DIV_ROUND_UP in its overview code)."""
    shapes = [(width, height)]
    for level in range(1, overview_levels(width, height) + 1):
        factor = 2**level
        shapes.append((-(-width // factor), -(-height // factor)))
    return shapes


def _tile_for(shapes: list[tuple[int, int]]) -> int:
    """The first of TILE_SIZES that is not the width of any level the validator checks for tiling."""
    checked = {w for w, h in shapes if max(w, h) > VALIDATOR_MIN_SIDE}
    for size in TILE_SIZES:
        if size not in checked:
            return size
    raise ValueError(f"no tile size in {TILE_SIZES} avoids the level widths {sorted(checked)}")


def tile_sizes(width: int, height: int) -> tuple[int, int]:
    """(full-resolution tile side, overview tile side) for a grid of this shape."""
    shapes = level_shapes(width, height)
    return _tile_for(shapes[:1]), _tile_for(shapes[1:])


def expected_warnings(width: int, height: int) -> set[str]:
    """rio-cogeo warnings that no COG of this shape can avoid, so strict validation may ignore them.

    Only one: a raster one pixel wide and taller than 512 px must have overviews to be quiet, and
    overviews one pixel wide are always "Invalid Decimation 1" (see ``overview_levels``).
    """
    if width == 1 and height > VALIDATOR_MIN_SIDE:
        return {"The file is greater than 512xH or 512xW, it is recommended to include internal overviews"}
    return set()
