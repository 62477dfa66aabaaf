"""GDAL VRT mosaics of tiled regions: one VRT per region × year pair × method × UTM zone, over the change
COGs of its tiles, in ``<collection>/mosaics/`` and linked from the collection as assets.

One VRT per zone, not one per region: a VRT has one CRS, and the tiles of each zone share that zone's pixel
lattice, so a per-zone VRT is an exact, unresampled mosaic (its pixels are the tiles' pixels). A region
spanning zones would otherwise need a warped VRT (in EPSG:4326, say), which resamples every pixel and
hides the distortion tiling avoids; users who want one CRS reproject on load (odc-stac, ``gdalwarp``).

The VRTs are built from the items alone (``proj:code``/``proj:shape``/``proj:transform`` of their change
asset), so they are rewritten with the collection, under the catalog's write lock, whenever its items
change (a run, a re-run, a prune), and never disagree with the tiles.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from xml.sax.saxutils import escape

import pystac
from pyproj import CRS

from generator.fsmode import make_public

MOSAIC_FOLDER = "mosaics"
"""Folder of the VRTs in each collection folder (beside the item folders; it holds no item JSON)."""
MOSAIC_SUFFIX = ".vrt"
VRT_MEDIA_TYPE = "application/xml"
"""GDAL's VRT is XML; no media type of its own is registered."""
MOSAIC_ROLES = ["data", "mosaic"]
ASSET_PREFIX = "mosaic-"
CHANGE_ASSET = "change"  # catalog.build.CHANGE_ASSET (not imported: build imports this module)
GDAL_TYPES = {"float32": "Float32", "float64": "Float64", "uint8": "Byte", "uint16": "UInt16"}


def zone_label(code: str) -> str:
    """ "EPSG:32632" → "32n", "EPSG:32733" → "33s"; other CRSs their code's digits."""
    number = int(code.split(":")[-1])
    if 32601 <= number <= 32660 or 32701 <= number <= 32760:
        return f"{number % 100:02d}{'n' if number < 32700 else 's'}"
    return str(number)


def mosaic_groups(items: list[pystac.Item]) -> dict[str, list[pystac.Item]]:
    """Tile items by mosaic name ``{region}_{from}_{to}_{method}_{zone}`` (items of whole regions have no
    ``change:tile`` and no mosaic)."""
    groups: dict[str, list[pystac.Item]] = defaultdict(list)
    for item in items:
        p = item.properties
        asset = item.assets.get(CHANGE_ASSET)
        if "change:tile" not in p or asset is None or "proj:code" not in asset.extra_fields:
            continue
        zone = zone_label(str(asset.extra_fields["proj:code"]))
        years = f"{p['change:from_year']}_{p['change:to_year']}"
        name = f"{p['change:region']}_{years}_{p['change:method']}_{zone}"
        groups[name].append(item)
    return {name: sorted(group, key=lambda i: i.id) for name, group in sorted(groups.items())}


def _layout(items: list[pystac.Item]) -> tuple[list[float], int, int, list[tuple[pystac.Item, int, int]]]:
    """The mosaic's GDAL geotransform (x0, a, 0, y1, 0, e) and size, and each tile's pixel offset in it
    (tiles share one lattice)."""
    placed = []
    for item in items:
        fields = item.assets[CHANGE_ASSET].extra_fields
        a, _, c, _, e, f = fields["proj:transform"][:6]
        height, width = fields["proj:shape"]
        placed.append((item, a, e, c, f, width, height))
    a, e = placed[0][1], placed[0][2]
    x0 = min(p[3] for p in placed)
    y1 = max(p[4] for p in placed)
    x1 = max(p[3] + a * p[5] for p in placed)
    y0 = min(p[4] + e * p[6] for p in placed)
    width, height = round((x1 - x0) / a), round((y0 - y1) / e)
    offsets = [(p[0], round((p[3] - x0) / a), round((p[4] - y1) / e)) for p in placed]
    return [x0, a, 0.0, y1, 0.0, e], width, height, offsets


def vrt_xml(items: list[pystac.Item]) -> str:
    """The VRT of a group of tile items (same CRS and lattice), their COGs referenced relative to it."""
    first = items[0].assets[CHANGE_ASSET].extra_fields
    transform, width, height, offsets = _layout(items)
    data_type = GDAL_TYPES[str(first.get("data_type", "float32"))]
    nodata = str(first.get("nodata", "nan"))
    wkt = CRS.from_user_input(first["proj:code"]).to_wkt()
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(wkt)}</SRS>',
        f"  <GeoTransform>{', '.join(repr(float(v)) for v in transform)}</GeoTransform>",
        f'  <VRTRasterBand dataType="{data_type}" band="1">',
        f"    <NoDataValue>{escape(nodata)}</NoDataValue>",
    ]
    for item, xoff, yoff in offsets:
        asset = item.assets[CHANGE_ASSET]
        h, w = asset.extra_fields["proj:shape"]
        href = f"../{item.id}/{asset.href.removeprefix('./')}"
        lines += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="1">{escape(href)}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{data_type}" />',
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}" />',
            f'      <DstRect xOff="{xoff}" yOff="{yoff}" xSize="{w}" ySize="{h}" />',
            "    </SimpleSource>",
        ]
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def mosaic_assets(items: list[pystac.Item]) -> dict[str, pystac.Asset]:
    """The collection's assets for the VRTs of its tiled regions (key ``mosaic-<name>``)."""
    out = {}
    for name, group in mosaic_groups(items).items():
        p = group[0].properties
        code = group[0].assets[CHANGE_ASSET].extra_fields["proj:code"]
        transform, width, height, _ = _layout(group)
        x0, a, _, y1, _, e = transform
        out[f"{ASSET_PREFIX}{name}"] = pystac.Asset(
            href=f"./{MOSAIC_FOLDER}/{name}{MOSAIC_SUFFIX}",
            title=(
                f"Mosaic (GDAL VRT): region {p['change:region']}, {p['change:from_year']}→"
                f"{p['change:to_year']} ({p['change:method']}), UTM zone {zone_label(str(code)).upper()}"
            ),
            description=(
                f"The change COGs of the region's {len(group)} tile(s) in this UTM zone as one raster "
                "(items with the same change:region, years and method; one VRT per zone, in its CRS)."
            ),
            media_type=VRT_MEDIA_TYPE,
            roles=list(MOSAIC_ROLES),
            extra_fields={
                "change:region": p["change:region"],
                "change:from_year": p["change:from_year"],
                "change:to_year": p["change:to_year"],
                "change:method": p["change:method"],
                "proj:code": code,
                "proj:shape": [height, width],
                "proj:transform": [a, 0.0, x0, 0.0, e, y1],  # affine order, as on the items
            },
        )
    return out


def mosaics_missing(collection_folder: Path) -> bool:
    """Whether a mosaic asset of the collection.json in this folder names a VRT that is not there (removed
    by hand): a plain run then rewrites them."""
    path = Path(collection_folder) / "collection.json"
    try:
        assets = json.loads(path.read_text(encoding="utf-8")).get("assets") or {}
    except (OSError, ValueError, AttributeError):
        return False  # no collection yet, or an unreadable one (rebuilt anyway)
    return any(
        isinstance(a, dict)
        and "mosaic" in (a.get("roles") or [])
        and not (Path(collection_folder) / str(a.get("href", ""))).is_file()
        for a in assets.values()
    )


def refresh_mosaics(root: Path, collection: str, items: list[pystac.Item]) -> None:
    """Write the VRTs the collection's items call for (atomically, only those that changed) and remove
    the others; call under the catalog's write lock, before the collection that links them."""
    folder = Path(root) / collection / MOSAIC_FOLDER
    wanted = {f"{name}{MOSAIC_SUFFIX}": vrt_xml(group) for name, group in mosaic_groups(items).items()}
    for name, text in wanted.items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            _write_text_atomic(path, text)
    if folder.is_dir():
        for path in folder.glob(f"*{MOSAIC_SUFFIX}"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, fsync, rename over it: readers see old or new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        make_public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
