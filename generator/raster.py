"""Streaming COG writer: blocks → temporary tiled GeoTIFF → validated COG, atomically.

Memory stays bounded whatever the grid size: blocks go straight to a tiled GeoTIFF on disk (GDAL writes
them tile by tile), rio-cogeo copies it block by block into an on-disk intermediate (never ``in_memory``)
and GDAL builds overviews from disk. Every temporary file lives in a hidden folder next to the output, so
the final ``os.replace`` is an atomic rename on the same filesystem and ``/tmp`` (often RAM-backed) is
never filled with a region-sized file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from generator.errors import OutputError
from generator.grid import BLOCK_SIZE, Grid

DTYPE = "float32"
NODATA = float("nan")

COMPRESSION = "DEFLATE"
"""DEFLATE rather than ZSTD: every GDAL/libtiff/geotiff.js reader decodes it (rio-cogeo warns that ZSTD
COGs may not be readable by software built against older libtiff)."""

PREDICTORS = {"float32": 3, "uint16": 2}
"""TIFF predictor by data type: floating-point (3) for change values, horizontal differencing (2) for
integer reflectances; both make smooth rasters compress much better."""

OVERVIEW_RESAMPLING = "average"
"""Change values are continuous: an overview pixel should show the mean change of the area it covers.
"nearest" would pick one arbitrary pixel out of 2^k×2^k and make zoomed-out views speckled and
unrepresentative. GDAL's average skips nodata (NaN) pixels, so region edges do not bleed."""

GDAL_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL's block cache during the writer's GDAL calls. GDAL's default is 5 % of RAM, and written tiles
stay in the cache until it is full, so without this cap memory grows with the grid up to that 5 %.
Measured peak RSS on a 24 GB machine: 10000² grid 1.4 GB uncapped, 0.45 GB with a 256 MB cap. With
64 MB the whole AEF job (benchmarks/bench_aef.py) peaks at 0.46 GB for 5 Mpx and 0.51 GB for 52 Mpx,
as fast as with 256 MB."""

GDAL_CONFIG = {
    "GDAL_CACHEMAX": GDAL_CACHE_BYTES,
    # Overview tiles the same size as the full-resolution tiles (GDAL's default may be smaller).
    "GDAL_TIFF_OVR_BLOCKSIZE": str(BLOCK_SIZE),
}
TMP_PREFIX = ".tmp-"


def overview_levels(width: int, height: int) -> int:
    """Halvings until the longest side fits one block: rio-cogeo's default stops at the *shortest*
    side, which leaves e.g. a 700×300 raster without overviews, and such a COG fails strict validation."""
    levels = 0
    while max(width, height) > BLOCK_SIZE * 2**levels:
        levels += 1
    return levels


def _gdal_env() -> rasterio.Env:
    """GDAL settings for one call of the writer.

    Entered around each GDAL call rather than for the whole ``with``: rasterio Envs must exit in the
    reverse order of entry, and a source generator suspended inside our ``with`` may hold its own Env.
    Tiles we add while the cap is in force evict older (flushed) tiles, so our share of the cache stays
    under the cap; what other code caches outside these calls follows the process-wide setting.
    """
    return rasterio.Env(**GDAL_CONFIG)


class CogWriter:
    """Context manager: ``write(window, values)`` blocks in any order, get a validated COG at ``path``.

    On a clean exit the COG appears at ``path`` in one atomic rename. On an exception inside the
    ``with`` every temporary is deleted and ``path`` is left as it was (absent, or an older file).
    Pixels of windows never written are nodata. The default is the change raster: one float32 band,
    nodata NaN; ``count``/``dtype``/``nodata`` make others (e.g. a 3-band uint16 RGB composite).
    """

    def __init__(
        self, path: Path, grid: Grid, count: int = 1, dtype: str = DTYPE, nodata: float = NODATA
    ) -> None:
        if dtype not in PREDICTORS:
            raise ValueError(f"dtype {dtype}: the writer handles {', '.join(PREDICTORS)}")
        self.path = Path(path)
        self.grid = grid
        self.count, self.dtype, self.nodata = count, dtype, nodata
        self._tmpdir: Path | None = None
        self._dst: rasterio.io.DatasetWriter | None = None

    def __enter__(self) -> CogWriter:
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path}: the output folder {self.path.parent} does not exist")
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.path.name}-", dir=self.path.parent))
        try:
            with _gdal_env():
                self._dst = rasterio.open(
                    self._tmpdir / "stream.tif",
                    "w",
                    driver="GTiff",
                    width=self.grid.width,
                    height=self.grid.height,
                    count=self.count,
                    dtype=self.dtype,
                    nodata=self.nodata,
                    crs=self.grid.crs,
                    transform=self.grid.transform,
                    tiled=True,
                    blockxsize=BLOCK_SIZE,
                    blockysize=BLOCK_SIZE,
                    # SPARSE_OK: tiles never written are not stored and read back as the nodata value.
                    sparse_ok=True,
                    # Light compression keeps the intermediate small on disk; speed matters more here.
                    compress="DEFLATE",
                    zlevel=1,
                    predictor=PREDICTORS[self.dtype],
                    BIGTIFF="IF_SAFER",
                )
        except Exception:
            self._cleanup()
            raise
        return self

    def write(self, window: Window, values: np.ndarray) -> None:
        """Write one block at ``window`` of the grid: (rows, cols) for one band, else (bands, rows, cols)."""
        if self._dst is None:
            raise RuntimeError("CogWriter.write() called outside its 'with' block")
        rows, cols = int(window.height), int(window.width)
        if values.ndim == 2:
            values = values[np.newaxis]
        if values.shape != (self.count, rows, cols):
            raise ValueError(f"block of shape {values.shape} does not match window {window} ({rows}, {cols})")
        r0, c0 = int(window.row_off), int(window.col_off)
        if r0 < 0 or c0 < 0 or r0 + rows > self.grid.height or c0 + cols > self.grid.width:
            raise ValueError(f"window {window} lies outside the grid {self.grid.width}×{self.grid.height}")
        with _gdal_env():
            self._dst.write(values.astype(self.dtype, copy=False), window=window)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            dst, self._dst = self._dst, None
            if dst is not None:
                with _gdal_env():
                    dst.close()
            if exc_type is None:
                self._finish()
        finally:
            self._cleanup()

    def _finish(self) -> None:
        assert self._tmpdir is not None
        stream, cog = self._tmpdir / "stream.tif", self._tmpdir / "cog.tif"
        profile = cog_profiles.get(COMPRESSION.lower())
        profile.update(
            blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE, predictor=PREDICTORS[self.dtype], BIGTIFF="IF_SAFER"
        )
        try:
            with _gdal_env(), warnings.catch_warnings():
                # rio-cogeo 7.0 builds its WarpedVRT with `Affine * Affine`, which rasterio 1.4 flags as
                # pending deprecation; nothing our callers can act on.
                warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="rio_cogeo")
                cog_translate(
                    stream,
                    cog,
                    profile,
                    nodata=self.nodata,
                    overview_level=overview_levels(self.grid.width, self.grid.height),
                    overview_resampling=OVERVIEW_RESAMPLING,
                    # Never None (= auto): rio-cogeo keeps rasters below ~120 Mpx (~480 MB float32) in RAM.
                    in_memory=False,
                    quiet=True,
                )
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise OutputError(f"{self.path}: could not write the COG: {exc}") from exc
        valid, errors, cog_warnings = cog_validate(cog, strict=True, quiet=True)
        if not valid:
            raise OutputError(
                f"{self.path}: the COG written is not valid: " + "; ".join(errors + cog_warnings)
            )
        os.replace(cog, self.path)

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
