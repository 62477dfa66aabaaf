"""The render extension's view of a change asset: the same rescale and palette as the quicklook, as a
titiler-style 256-entry colormap."""

from __future__ import annotations

from typing import Any

import numpy as np

PALETTE_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (0, 0, 0)),
    (0.25, (0, 0, 255)),
    (0.5, (0, 255, 255)),
    (0.75, (255, 255, 0)),
    (1.0, (255, 0, 0)),
)
"""Quicklook palette black → blue → cyan → yellow → red, as (position in 0..1, RGB) stops."""

RESCALE = (0.0, 0.5)
"""Change values mapped onto the palette's 0..1; most real change lies below 0.5."""

COLORMAP_ENTRIES = 256
"""titiler rescales to 0..255 and looks each byte up in the colormap."""

RENDER_KEY = "change"


def colormap(stops: tuple[tuple[float, tuple[int, int, int]], ...] = PALETTE_STOPS) -> dict[str, list[int]]:
    """Linear interpolation of the stops at 256 positions: {"0": [r, g, b, 255], ..., "255": [...]}."""
    positions = np.linspace(0.0, 1.0, COLORMAP_ENTRIES)
    xs = [s[0] for s in stops]
    channels = [np.interp(positions, xs, [s[1][c] for s in stops]) for c in range(3)]
    return {
        str(i): [
            round(float(channels[0][i])),
            round(float(channels[1][i])),
            round(float(channels[2][i])),
            255,
        ]
        for i in range(COLORMAP_ENTRIES)
    }


def change_renders(asset_key: str) -> dict[str, Any]:
    """``renders`` (render v2.0.0) showing one change asset with the quicklook's rescale and palette."""
    return {
        RENDER_KEY: {
            "title": f"Change {RESCALE[0]:g}–{RESCALE[1]:g}, black → blue → cyan → yellow → red",
            "assets": [asset_key],
            "rescale": [list(RESCALE)],
            "nodata": "nan",
            "colormap": colormap(),
            "resampling": "nearest",
        }
    }
