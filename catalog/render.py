"""The render extension's view of a change asset: the quicklook's rescale and named colormap, for titiler.

A named colormap keeps ``renders`` a few hundred bytes (a 256-entry custom colormap was ~15 KB in every
item and made titiler's URLs ~10 KB long) and is the definition the quicklooks are drawn with.
"""

from __future__ import annotations

from typing import Any

from generator.quicklook import COLORMAP_NAME, RESCALE

RENDER_KEY = "change"


def change_renders(asset_key: str) -> dict[str, Any]:
    """``renders`` (render v2.0.0) showing one change asset with the quicklook's rescale and colormap."""
    return {
        RENDER_KEY: {
            "title": f"Change {RESCALE[0]:g}–{RESCALE[1]:g} ({COLORMAP_NAME}: black = none, yellow = strong)",
            "assets": [asset_key],
            "rescale": [list(RESCALE)],
            "nodata": "nan",
            "colormap_name": COLORMAP_NAME,
            "resampling": "nearest",
        }
    }
