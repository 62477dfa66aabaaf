"""The render extension's view of a change asset: the quicklook's rescale and palette, for titiler."""

from __future__ import annotations

from typing import Any

from generator.quicklook import RESCALE, titiler_colormap

RENDER_KEY = "change"


def change_renders(asset_key: str) -> dict[str, Any]:
    """``renders`` (render v2.0.0) showing one change asset with the quicklook's rescale and palette."""
    return {
        RENDER_KEY: {
            "title": f"Change {RESCALE[0]:g}–{RESCALE[1]:g}, black → blue → cyan → yellow → red",
            "assets": [asset_key],
            "rescale": [list(RESCALE)],
            "nodata": "nan",
            "colormap": titiler_colormap(),
            "resampling": "nearest",
        }
    }
