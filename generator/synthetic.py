"""Small deterministic mirrors in the public AEF COG layout, with planted changes of known size.

Used by the demo and the tests. A mirror holds, per year and per UTM zone the bounds touch, square
bottom-up 64-band int8 COGs named ``{year}/{zone}{N|S}/{imageId}-{yoff:010d}-{xoff:010d}.tiff`` (offsets in
pixels from the south-west corner of the zone's image) and a GeoParquet ``aef_index.parquet``.

The embedding of a pixel is a smooth random field of the (lon, lat) of its centre, unit length, so the same
place has about the same vector in both zones. It is the same every year (no per-year noise) except where
planted: from ``Plant.year`` on, the vector is rotated so that ``1 − a·b`` between any earlier year and any
later one equals ``Plant.change`` exactly before quantization. ``Hole``s are nodata for their year.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely
from affine import Affine
from numba import njit
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from generator.grid import RESOLUTION_M, UTM_ZONE_WIDTH_DEG, to_crs, utm_zone
from generator.methods import METHODS, dequantize_lut
from generator.sources.aef import BANDS, INDEX_NAME, NODATA

COG_BLOCK = 256
"""Default internal tile side of the mirror's files (the real files use 1024: ``MirrorSpec.block_size``)."""
STREAM_MIN_TILE = 1024
"""Files at least this wide (the real files are 8192 px) are written block by block, without overviews,
and their smooth field is sampled every ``COARSE_STEP`` px (the per-pixel ``noise`` still varies every
pixel): an 8192² file is then written in about a minute instead of building 4 GB in memory."""
COARSE_STEP = 16
FEATURES = 12
"""Number of sinusoids the smooth field is built from."""
WAVELENGTH_DEG = (0.02, 0.08)
"""Range of the field's wavelengths in degrees (about 300 m to 2 km): smooth at 10 m, varied at 1 km."""
TEXTURE_AMPLITUDE = 0.3
ZONE_OVERLAP_DEG = 0.002
"""Each zone's files carry data this far (about 140 m) past the zone's edges, so that a grid in one zone
finds data across the border under nearest resampling and the zones join without a gap."""
WRITE_THREADS = 2


@dataclass(frozen=True)
class Plant:
    """A change planted in ``geometry`` (WGS84): ``1 − a·b`` = ``change`` across ``year``."""

    geometry: BaseGeometry
    year: int
    change: float


@dataclass(frozen=True)
class Hole:
    """Nodata (all bands −128) inside ``geometry`` (WGS84) in ``year``."""

    geometry: BaseGeometry
    year: int


@dataclass(frozen=True)
class MirrorSpec:
    """What a synthetic mirror holds. ``texture=False`` gives one constant vector everywhere."""

    bounds: tuple[float, float, float, float]  # west, south, east, north (WGS84)
    years: tuple[int, ...]
    tile_size: int = 256
    plants: tuple[Plant, ...] = ()
    holes: tuple[Hole, ...] = ()
    texture: bool = True
    seed: int = 0
    block_size: int = COG_BLOCK  # internal tile side (capped to the file's size)
    year_block_sizes: tuple[tuple[int, int], ...] = ()  # (year, block size) overriding block_size
    interleave: str = "PIXEL"  # "BAND" like the public files (each band's blocks stored apart)
    bottom_up: bool = True  # the public files are; False writes north-up files
    noise: int = 0
    """Per-pixel noise in int8 steps, uniform in [−noise, noise], added after quantization and the same in
    every year (seeded by place): real embeddings vary from pixel to pixel and compress only ~1.1×, which
    ``noise≈60`` reproduces; 0 keeps the smooth, highly compressible field."""

    def block_of(self, year: int) -> int:
        return dict(self.year_block_sizes).get(year, self.block_size)


@dataclass(frozen=True)
class TileInfo:
    """One file of the mirror: its zone, UTM bounds and image offsets."""

    year: int
    zone: str  # "33N"
    crs: str  # "EPSG:32633"
    image_id: str
    xoff: int
    yoff: int
    west: float
    south: float
    size: int

    @property
    def path(self) -> str:
        return f"{self.year}/{self.zone}/{self.image_id}-{self.yoff:010d}-{self.xoff:010d}.tiff"

    @property
    def utm_bounds(self) -> tuple[float, float, float, float]:
        side = self.size * RESOLUTION_M
        return (self.west, self.south, self.west + side, self.south + side)

    def transform_for(self, bottom_up: bool = True) -> Affine:
        """Bottom-up: row 0 is the southern edge (positive y pixel size), as in the public files."""
        if bottom_up:
            return Affine(RESOLUTION_M, 0.0, self.west, 0.0, RESOLUTION_M, self.south)
        return Affine(RESOLUTION_M, 0.0, self.west, 0.0, -RESOLUTION_M, self.south + self.size * RESOLUTION_M)

    @property
    def transform(self) -> Affine:
        return self.transform_for(True)


# --- the field ------------------------------------------------------------------------------------------


class _Field:
    """Random parameters of the embedding field and of the planting directions, from the seed."""

    def __init__(self, seed: int, texture: bool) -> None:
        rng = np.random.default_rng(seed)
        wavelength = rng.uniform(*WAVELENGTH_DEG, FEATURES)
        angle = rng.uniform(0.0, 2.0 * math.pi, FEATURES)
        self.kx = np.cos(angle) / wavelength
        self.ky = np.sin(angle) / wavelength
        self.phase = rng.uniform(0.0, 2.0 * math.pi, FEATURES)
        amplitude = TEXTURE_AMPLITUDE if texture else 0.0
        self.base = rng.normal(size=(2, BANDS, 1)) / math.sqrt(BANDS)
        self.mix = rng.normal(size=(2, BANDS, FEATURES)) * amplitude / math.sqrt(FEATURES * BANDS)

    def raw(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, planting direction), both (64, n) float64 and not yet normalized."""
        f = np.sin(2.0 * math.pi * (np.outer(self.kx, lon) + np.outer(self.ky, lat)) + self.phase[:, None])
        return self.base[0] + self.mix[0] @ f, self.base[1] + self.mix[1] @ f


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def _base(spec: MirrorSpec, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit embedding, raw planting direction), (64, n) each, the same in every year."""
    raw, direction = _Field(spec.seed, spec.texture).raw(lon, lat)
    return _unit(raw), direction


def _in_year(
    spec: MirrorSpec, base: np.ndarray, direction: np.ndarray, lon: np.ndarray, lat: np.ndarray, year: int
) -> np.ndarray:
    """The vectors of ``year``: the base field rotated by the plants up to ``year``, NaN in its holes."""
    v = base.copy()
    for plant in sorted(spec.plants, key=lambda p: p.year):
        if plant.year > year:
            continue
        inside = shapely.contains_xy(plant.geometry, lon, lat)
        if not inside.any():
            continue
        vi, wi = v[:, inside], direction[:, inside]
        u = _unit(wi - np.sum(wi * vi, axis=0) * vi)
        cos = 1.0 - plant.change
        v[:, inside] = cos * vi + math.sqrt(max(0.0, 1.0 - cos * cos)) * u
    for hole in spec.holes:
        if hole.year == year:
            v[:, shapely.contains_xy(hole.geometry, lon, lat)] = np.nan
    return v


def embeddings(spec: MirrorSpec, lon: np.ndarray, lat: np.ndarray, year: int) -> np.ndarray:
    """The true (float64, unit, unquantized) vectors (64, n) at points in ``year``; NaN inside holes.

    Points outside the mirror's bounds get vectors too; the files hold nodata there.
    """
    lon, lat = np.asarray(lon, dtype=np.float64).ravel(), np.asarray(lat, dtype=np.float64).ravel()
    base, direction = _base(spec, lon, lat)
    return _in_year(spec, base, direction, lon, lat, year)


def expected_change(
    spec: MirrorSpec, lon: np.ndarray, lat: np.ndarray, from_year: int, to_year: int, method: str = "cosine"
) -> np.ndarray:
    """The true change at points (before quantization); NaN where either year is a hole."""
    a = embeddings(spec, lon, lat, from_year)
    b = embeddings(spec, lon, lat, to_year)
    return METHODS[method].from_dot(np.sum(a * b, axis=0)).astype(np.float64)


def planted_value(change: float, method: str) -> float:
    """What ``method`` gives for a planted cosine change (angle = arccos(1 − c)/π)."""
    return float(METHODS[method].from_dot(np.array([1.0 - change]))[0])


def quantize(x: np.ndarray) -> np.ndarray:
    """Inverse of the AEF de-quantization ``x = (v/127.5)**2 * sign(v)``; NaN → nodata (−128)."""
    x = np.asarray(x, dtype=np.float64)
    v = np.copysign(np.sqrt(np.abs(x)), x) * 127.5
    np.rint(v, out=v)
    np.clip(v, -127.0, 127.0, out=v)
    v[np.isnan(v)] = NODATA
    return v.astype(np.int8)


def dequantize(v: np.ndarray) -> np.ndarray:
    """AEF int8 → float32 (nodata not handled; mask −128 yourself)."""
    return dequantize_lut()[np.asarray(v, dtype=np.int8).view(np.uint8)]


# --- layout ---------------------------------------------------------------------------------------------


def zone_lon_range(zone: int) -> tuple[float, float]:
    west = -180.0 + UTM_ZONE_WIDTH_DEG * (zone - 1)
    return west, west + UTM_ZONE_WIDTH_DEG


def tiles(spec: MirrorSpec, year: int) -> Iterator[TileInfo]:
    """The files of one year: square tiles of ``tile_size`` px covering the bounds in each zone touched."""
    west, south, east, north = spec.bounds
    if south < 0.0 < north:
        raise ValueError(f"bounds {spec.bounds} straddle the equator; keep a mirror in one hemisphere")
    hemi, base = ("N", 32600) if south >= 0.0 else ("S", 32700)
    side = spec.tile_size * RESOLUTION_M
    for zone in range(utm_zone(west), utm_zone(math.nextafter(east, -math.inf)) + 1):
        z0, z1 = zone_lon_range(zone)
        crs = f"EPSG:{base + zone}"
        area = box(max(west, z0 - ZONE_OVERLAP_DEG), south, min(east, z1 + ZONE_OVERLAP_DEG), north)
        area = area.segmentize(0.005)
        x0, y0, x1, y1 = to_crs(area, "EPSG:4326", crs).bounds
        x0, y0 = math.floor(x0 / RESOLUTION_M) * RESOLUTION_M, math.floor(y0 / RESOLUTION_M) * RESOLUTION_M
        nx, ny = math.ceil((x1 - x0) / side), math.ceil((y1 - y0) / side)
        image_id = hashlib.sha256(f"{spec.seed}/{year}/{zone}{hemi}".encode()).hexdigest()[:17]
        for j in range(ny):
            for i in range(nx):
                yield TileInfo(
                    year=year,
                    zone=f"{zone}{hemi}",
                    crs=crs,
                    image_id=image_id,
                    xoff=i * spec.tile_size,
                    yoff=j * spec.tile_size,
                    west=x0 + i * side,
                    south=y0 + j * side,
                    size=spec.tile_size,
                )


def tile_footprint(tile: TileInfo) -> BaseGeometry:
    """The tile's area in WGS84 clipped to its UTM zone (the index's ``geometry`` is this ∩ the bounds)."""
    z0, z1 = zone_lon_range(int(tile.zone[:-1]))
    footprint = to_crs(box(*tile.utm_bounds).segmentize(tile.size * RESOLUTION_M / 8), tile.crs, "EPSG:4326")
    return footprint.intersection(box(z0, -90.0, z1, 90.0))


def tile_lonlat(
    tile: TileInfo, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None, step: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of the pixel centres as (size, size) arrays in file order (row 0 = south); or of every
    ``step``-th pixel of rows × cols (counted from the south-west corner) of the tile."""
    r0, r1 = rows or (0, tile.size)
    c0, c1 = cols or (0, tile.size)
    centre = (step - 1) / 2 + 0.5
    x, y = np.meshgrid(
        tile.west + (np.arange(c0, c1, step) + centre) * RESOLUTION_M,
        tile.south + (np.arange(r0, r1, step) + centre) * RESOLUTION_M,
    )
    lon, lat = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def tile_data(spec: MirrorSpec, tile: TileInfo) -> np.ndarray:
    """The int8 (64, size, size) content of a file: nodata outside its zone (+ overlap), the bounds, holes."""
    return next(_tile_years(spec, [tile]))[1]


def _tile_years(
    spec: MirrorSpec,
    same_place: list[TileInfo],
    rows: tuple[int, int] | None = None,
    cols: tuple[int, int] | None = None,
    step: int = 1,
) -> Iterator[tuple[TileInfo, np.ndarray]]:
    """Contents (bottom-up, row 0 = south) of tiles at one place in several years, computing the base
    field once; or of rows × cols of them, the field sampled every ``step`` px and repeated."""
    first = same_place[0]
    lon2, lat2 = tile_lonlat(first, rows, cols, step)
    shape = lon2.shape
    lon, lat = lon2.ravel(), lat2.ravel()
    z0, z1 = zone_lon_range(int(first.zone[:-1]))
    west, south, east, north = spec.bounds
    z0, z1 = z0 - ZONE_OVERLAP_DEG, z1 + ZONE_OVERLAP_DEG
    outside = ~((lon >= z0) & (lon < z1) & (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north))
    base, direction = _base(spec, lon, lat)
    r0, r1 = rows or (0, first.size)
    c0, c1 = cols or (0, first.size)
    noise = np.zeros((BANDS, r1 - r0, c1 - c0), dtype=np.uint8)
    if spec.noise:  # random bytes, made uniform in [−noise, noise] by _spread (much faster than integers())
        rng = np.random.default_rng([spec.seed, int(first.zone[:-1]), first.xoff, first.yoff, r0, c0])
        noise = np.frombuffer(rng.bytes(noise.size), dtype=np.uint8).reshape(noise.shape)
    for tile in same_place:
        v = _in_year(spec, base, direction, lon, lat, tile.year)
        v[:, outside] = np.nan
        q = quantize(v).reshape(BANDS, *shape)
        if step > 1 or spec.noise:
            out = np.empty((BANDS, r1 - r0, c1 - c0), dtype=np.int8)
            _spread(q, step, noise, spec.noise, out)
            q = out
        yield tile, q


@njit(nogil=True, cache=True)
def _spread(
    q: np.ndarray, step: int, noise: np.ndarray, amplitude: int, out: np.ndarray
) -> None:  # pragma: no cover
    """``out`` = ``q`` repeated ``step`` times along rows and columns, plus noise uniform in
    [−amplitude, amplitude] made from the random bytes ``noise`` (same shape as ``out``), kept within
    ±127; pixels nodata in ``q`` stay nodata (−128) in every band. One pass, no temporaries."""
    bands, rows, cols = out.shape
    span = 2 * amplitude + 1
    base = np.empty(cols, dtype=np.int16)
    hole = np.empty(cols, dtype=np.bool_)
    for k in range(bands):
        for rr in range((rows + step - 1) // step):
            for c in range(cols):
                base[c] = q[k, rr, c // step]
                hole[c] = q[0, rr, c // step] == NODATA
            for r in range(rr * step, min(rr * step + step, rows)):
                for c in range(cols):
                    v = base[c] + np.int16((np.int32(noise[k, r, c]) * span) >> 8) - amplitude
                    v = min(max(v, -127), 127)
                    out[k, r, c] = NODATA if hole[c] else v


def _profile(spec: MirrorSpec, tile: TileInfo) -> dict:
    return dict(
        driver="GTiff",
        dtype="int8",
        count=BANDS,
        width=tile.size,
        height=tile.size,
        crs=tile.crs,
        transform=tile.transform_for(spec.bottom_up),
        nodata=NODATA,
    )


def _storage(spec: MirrorSpec, tile: TileInfo) -> dict:
    """Creation options: ZSTD like the public files; differencing only helps the smooth field."""
    block = min(spec.block_of(tile.year), tile.size)
    return dict(compress="ZSTD", predictor=1 if spec.noise else 2, interleave=spec.interleave, block=block)


def _gtiff_options(storage: dict) -> dict:
    """Tiled GTiff creation options for ``_storage``'s layout (ZSTD level 1 like the public files)."""
    return dict(
        tiled=True,
        blockxsize=storage["block"],
        blockysize=storage["block"],
        compress="ZSTD",
        zstd_level=1,
        predictor=storage["predictor"],
        interleave=storage["interleave"],
    )


def _write_cog(path: Path, spec: MirrorSpec, tile: TileInfo, data: np.ndarray) -> None:
    """A small file with overviews down to 1×1: a COG (COG driver) when pixel-interleaved, else a GTiff
    with the same layout (the COG driver of GDAL 3.10 cannot interleave by band)."""
    profile = _profile(spec, tile)
    storage = _storage(spec, tile)
    if not spec.bottom_up:
        data = data[:, ::-1]
    levels = [2**k for k in range(1, max(1, math.ceil(math.log2(tile.size))) + 1)]
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
            # Overviews down to 1×1 like the public files; built here (faster) and kept by the COG driver.
            ds.build_overviews(levels, Resampling.nearest)
        with mem.open() as src:
            if storage["interleave"] == "PIXEL":
                rio_copy(
                    src,
                    path,
                    driver="COG",
                    blocksize=storage["block"],
                    compress="ZSTD",
                    level=1,
                    predictor=storage["predictor"],
                    interleave="PIXEL",
                    overviews="FORCE_USE_EXISTING",
                )
            else:
                rio_copy(
                    src,
                    path,
                    driver="GTiff",
                    **_gtiff_options(storage),
                    copy_src_overviews=True,
                )


def _block_has_data(spec: MirrorSpec, tile: TileInfo, rows: tuple[int, int], cols: tuple[int, int]) -> bool:
    """Whether part of rows × cols of a tile lies inside the bounds (tested every ``COARSE_STEP`` px)."""
    lon, lat = tile_lonlat(tile, rows, cols, COARSE_STEP)
    west, south, east, north = spec.bounds
    return bool(((lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)).any())


def _write_streamed(root: Path, spec: MirrorSpec, place: tuple[TileInfo, ...]) -> None:
    """Large files (``STREAM_MIN_TILE``) written block row by block row, every year at once, no
    overviews; memory stays at one block row per year."""
    first = place[0]
    block = min(spec.block_of(first.year), first.size)
    outs = []
    try:
        for tile in place:
            path = root / tile.path
            path.parent.mkdir(parents=True, exist_ok=True)
            storage = _storage(spec, tile)
            outs.append(
                rasterio.open(
                    path,
                    "w",
                    **_profile(spec, tile),
                    **_gtiff_options(storage),
                    BIGTIFF="IF_SAFER",
                    sparse_ok=True,  # blocks outside the bounds are never written: nodata, no disk
                )
            )
        for r0 in range(0, first.size, block):
            r1 = min(r0 + block, first.size)
            for c0 in range(0, first.size, block):
                c1 = min(c0 + block, first.size)
                if not _block_has_data(spec, first, (r0, r1), (c0, c1)):
                    continue
                for out, (_, data) in zip(
                    outs, _tile_years(spec, list(place), (r0, r1), (c0, c1), COARSE_STEP), strict=True
                ):
                    if spec.bottom_up:
                        window = Window(c0, r0, c1 - c0, r1 - r0)
                    else:
                        window = Window(c0, first.size - r1, c1 - c0, r1 - r0)
                        data = data[:, ::-1]
                    out.write(data, window=window)
    finally:
        for out in outs:
            out.close()


def _write_index(root: Path, rows: list[tuple[TileInfo, BaseGeometry]]) -> None:
    """GeoParquet 1.0 index with the public columns, geometry as WKB in WGS84."""
    geoms = [g for _, g in rows]
    columns = {
        "fid": pa.array(range(len(rows)), pa.int64()),
        "path": [t.path for t, _ in rows],
        "year": pa.array([t.year for t, _ in rows], pa.int64()),
        "crs": [t.crs for t, _ in rows],
        "utm_zone": [t.zone for t, _ in rows],
        "utm_west": [t.utm_bounds[0] for t, _ in rows],
        "utm_south": [t.utm_bounds[1] for t, _ in rows],
        "utm_east": [t.utm_bounds[2] for t, _ in rows],
        "utm_north": [t.utm_bounds[3] for t, _ in rows],
        "wgs84_west": [g.bounds[0] for g in geoms],
        "wgs84_south": [g.bounds[1] for g in geoms],
        "wgs84_east": [g.bounds[2] for g in geoms],
        "wgs84_north": [g.bounds[3] for g in geoms],
        "geometry": pa.array([shapely.to_wkb(g) for g in geoms], pa.binary()),
    }
    table = pa.table(columns)
    all_bounds = shapely.total_bounds(geoms).tolist()
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": sorted({g.geom_type for g in geoms}),
                "crs": None,  # null = OGC:CRS84 (lon/lat WGS84) in GeoParquet 1.0
                "bbox": all_bounds,
            }
        },
    }
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    pq.write_table(table, root / INDEX_NAME)


def _write_place(root: Path, spec: MirrorSpec, place: tuple[TileInfo, ...]) -> list[TileInfo]:
    """Write one tile position in every year; return the tiles written (none outside the bounds)."""
    footprint = tile_footprint(place[0]).intersection(box(*spec.bounds))
    if footprint.is_empty or footprint.area == 0.0:
        return []
    if place[0].size >= STREAM_MIN_TILE:
        _write_streamed(root, spec, place)
        return list(place)
    for tile, data in _tile_years(spec, list(place)):
        path = root / tile.path
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_cog(path, spec, tile, data)
    return list(place)


def build_mirror(root: Path, spec: MirrorSpec) -> None:
    """Write the mirror's files and index under ``root`` (deterministic: same spec → same bytes).

    Tiles are written by a small thread pool (GDAL and numpy release the GIL); each file is independent.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    places = list(zip(*(tiles(spec, year) for year in sorted(spec.years)), strict=True))
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        written = [t for ts in pool.map(lambda p: _write_place(root, spec, p), places) for t in ts]
    area = box(*spec.bounds)
    written.sort(key=lambda t: (t.year, t.path))
    rows = [(t, tile_footprint(t).intersection(area)) for t in written]
    _write_index(root, rows)
