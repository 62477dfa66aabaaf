"""What a catalog holds, one row per item, read from the catalog's JSON (for ``changecat info``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from catalog.walk import iter_all_items

SUMMARY_THRESHOLD = 0.2
"""The changed-area threshold shown in the summary table."""


def _changed_at(areas: list[dict[str, Any]], threshold: float) -> tuple[float, float]:
    for a in areas:
        if math.isclose(float(a.get("threshold", math.nan)), threshold):
            return float(a["area_km2"]), float(a["fraction"])
    return math.nan, math.nan


def summarize(root: Path) -> list[dict[str, Any]]:
    """Rows with item_id, region, from_year, to_year, method, mean, changed_km2 and changed_fraction
    (at ``SUMMARY_THRESHOLD``), sorted by item id; NaN where an item lacks a figure."""
    return summarize_items(item for _, item in iter_all_items(Path(root)))


def summarize_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summarize`` of items however they were read (a local folder or a URL)."""
    rows = []
    for item in items:
        props = item.get("properties", {})
        assets = item.get("assets", {})
        data = assets.get("change") or assets.get("magnitude") or {}  # a timeline: its largest change
        stats = data.get("statistics") or {}
        km2, fraction = _changed_at(props.get("change:changed_area") or [], SUMMARY_THRESHOLD)
        rows.append(
            {
                "item_id": item.get("id", ""),
                "region": props.get("change:region", ""),
                "from_year": props.get("change:from_year"),
                "to_year": props.get("change:to_year"),
                "method": props.get("change:method", ""),
                "mean": float(stats.get("mean", math.nan)),
                "changed_km2": km2,
                "changed_fraction": fraction,
            }
        )
    return sorted(rows, key=lambda r: r["item_id"])
