"""Streaming COG writer: blocks → tiled GeoTIFF with overviews → COG, read back in full, then renamed.

Memory stays bounded whatever the grid size: blocks go straight to a tiled GeoTIFF on disk (GDAL writes
them tile by tile, uncompressed: the only compression is the COG's own), GDAL builds the overviews into
that file from disk, and one GDAL copy (COPY_SRC_OVERVIEWS) lays it out as the DEFLATE COG. The old path
(a DEFLATE-1 intermediate, then rio-cogeo, which wrote an uncompressed copy of the whole raster before its
own copy) took 1.2 × the CPU time of this conversion and 1.7 × its scratch disk; with the checks below the
writer costs what the old conversion alone did (benchmarks/bench_cog_write.py). Every temporary file lives
in a hidden folder next to the output, so the final ``os.replace`` is an atomic rename on the same
filesystem.

A full disk must never give a truncated COG that looks finished. GDAL does not report every failed write:
libtiff prints some write errors to stderr and GDAL's flush on close ignores them, so a COG can lack its
last tiles while every call succeeded. So every GDAL step runs under ``_GdalStep`` (exceptions and logged
GDAL errors become ``OutputError``) and the finished COG only counts once every block of every band and
level has been read back, the full-resolution blocks equal (CRC-32) to what was written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
import zlib
from pathlib import Path, PurePath
from types import TracebackType

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors rasterio raises; not re-exported publicly
from rasterio.enums import Resampling
from rasterio.shutil import copy as gdal_copy
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from generator.cog_tiling import expected_warnings, overview_levels, tile_sizes
from generator.errors import OutputError
from generator.grid import BLOCK_SIZE, Grid
from generator.path_limits import check_path_length

__all__ = ["CogWriter", "check_output_path"]

DTYPE = "float32"
NODATA = float("nan")

COMPRESSION = "DEFLATE"
"""DEFLATE rather than ZSTD: every GDAL/libtiff/geotiff.js reader decodes it (rio-cogeo warns that ZSTD
COGs may not be readable by software built against older libtiff)."""

COMPRESSION_LEVEL = 1
"""DEFLATE level of the COG (GDAL's ZLEVEL, default 6). Compressing the COG is most of the writer's CPU
time, and level 1 takes ~0.55× the CPU of level 6 for a COG ~2 % larger (25 Mpx of noisy float32 change
values with the floating-point predictor: 1.34 s vs 2.48 s of CPU, 87 vs 85 MiB; the predictor does most
of the work on such data). Any level decodes the same for every reader."""

PREDICTORS = {"float32": 3, "uint16": 2}
"""TIFF predictor by data type: floating-point (3) for change values, horizontal differencing (2) for
integer reflectances; both make smooth rasters compress much better."""

OVERVIEW_RESAMPLING = Resampling.average
"""Change values are continuous: an overview pixel should show the mean change of the area it covers.
"nearest" would pick one arbitrary pixel out of 2^k×2^k and make zoomed-out views speckled and
unrepresentative. GDAL's average skips nodata (NaN) pixels, so region edges do not bleed."""

GDAL_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL's block cache during the writer's GDAL calls. GDAL's default is 5 % of RAM, and written tiles
stay in the cache until it is full, so without this cap memory grows with the grid up to that 5 %.
Measured peak RSS on a 24 GB machine: 10000² grid 1.4 GB uncapped, 0.45 GB with a 256 MB cap. With
64 MB the whole AEF job (benchmarks/bench_aef.py) peaks at 0.46 GB for 5 Mpx and 0.51 GB for 52 Mpx,
as fast as with 256 MB."""

GDAL_THREADS = "ALL_CPUS"
"""Threads GDAL may use after the last block, when nothing else runs: to compress the COG's tiles (GTiff
NUM_THREADS creation option) and to compute the overviews (GDAL_NUM_THREADS config option). 25 Mpx of
noisy float32 on this 2-core machine while other work shared it (load 8–9): the copy to the COG took
5.3–5.4 s instead of 7.4–8.6 s, the overviews 1.6–3.3 s instead of 2.9–3.4 s, for the same CPU time.
Each tile is compressed on its own, so the file's bytes do not depend on it."""

VERIFY_BLOCKS = 4
"""The read-back reads squares of VERIFY_BLOCKS² grid blocks at once (16 blocks: 16 MiB of float32), so
GDAL decodes their tiles on its threads (GDAL_NUM_THREADS) while memory stays bounded for any grid."""

STREAM_COMPRESSION = "NONE"
"""Codec of the intermediate GeoTIFF (only this writer reads it, once for the overviews and once for the
copy). Change values are noisy float32 that no fast codec shrinks much, so compressing the intermediate
cost more than it saved: 25 Mpx of them, written, turned into overviews and copied to the COG, took
2.2 s of CPU with ZSTD level 1 (91 MB intermediate) and 1.4 s uncompressed (141 MB with its overviews).
Its overviews take the same codec. Tiles never written stay sparse either way (SPARSE_OK)."""

TMP_PREFIX = ".tmp-"
TMP_RANDOM_CHARS = 8
"""Length of the random part ``tempfile.mkdtemp`` adds to a name (CPython's ``_RandomNameSequence``)."""
STREAM_NAME = "stream.tif"
COG_TMP_NAME = "cog.tif"

DISK_FULL_FREE_BYTES = 1024 * 1024
"""Free space below which any failed write counts as "no space left on device"."""


def check_output_path(path: Path) -> None:
    """Raise ``OutputError`` naming the limit when ``path``, or the longest temporary the writer makes
    beside it, is longer than the filesystem or GDAL allows; called before anything is written."""
    longest = PurePath(f"{TMP_PREFIX}{Path(path).name}-{'x' * TMP_RANDOM_CHARS}") / STREAM_NAME
    check_path_length(Path(path), longest)


def _free_bytes(folder: Path) -> int | None:
    """Bytes this process may still write on the filesystem of ``folder`` (root may use reserved blocks)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _describe(exc: BaseException) -> str:
    """The most useful text of a GDAL exception: rasterio's "See previous exception" points at its cause."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "previous exception" in text:
        text = f"{text.split('. See previous')[0]}: {cause}"
    return text


RASTERIO_GDAL_LOGGER = "rasterio._env"
"""rasterio's error handler logs every GDAL error (CE_Failure) here at INFO as "GDAL signalled an error:
…", whether or not rasterio raises it afterwards (rasterio 1.4, ``_env.pyx``); warnings at WARNING."""
GDAL_ERROR_PREFIX = "GDAL signalled an error"
RASTERIO_UNKNOWN_ERROR = "Unknown GDAL Error"
"""rasterio raises ``SystemError("Unknown GDAL Error. …")`` when a GDAL call fails without an error in the
calling thread's error state (``_err.pyx``): what a write that failed on one of GDAL's worker threads
(GDAL_THREADS, e.g. on a full disk) gives."""


class _GdalErrors(logging.Handler):
    """Collects the GDAL errors rasterio logs, from this thread only (other threads may be reading sources
    with GDAL at the same time). Should rasterio change its wording, errors it only logs go unseen here
    and the read-back of the finished COG is what still catches a failed write."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread == self.thread and (
            message.startswith(GDAL_ERROR_PREFIX) or record.levelno >= logging.ERROR
        ):
            self.messages.append(message)


class _InfoLevel:
    """Holds rasterio's GDAL logger at INFO (where it logs GDAL errors) while any GDAL step or writer is
    open. Counted: the level is set by the first holder and restored by the last, so a writer that holds it
    for its whole life spares each block's step ``Logger.setLevel`` (which clears every logger's cache,
    ~1 ms per block), and writers open at once (a timeline's two rasters) restore it only when both end."""

    _lock = threading.Lock()
    _users = 0
    _saved = logging.NOTSET

    @classmethod
    def hold(cls) -> None:
        logger = logging.getLogger(RASTERIO_GDAL_LOGGER)
        with cls._lock:
            if cls._users == 0:
                cls._saved = logger.level
                if logger.getEffectiveLevel() > logging.INFO:
                    logger.setLevel(logging.INFO)
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        logger = logging.getLogger(RASTERIO_GDAL_LOGGER)
        with cls._lock:
            cls._users -= 1
            if cls._users == 0 and logger.level != cls._saved:
                logger.setLevel(cls._saved)


class _GdalStep:
    """Context manager around one GDAL step of writing ``path``: applies the writer's GDAL settings, turns
    GDAL/IO exceptions and logged GDAL errors into ``OutputError`` naming the path and the step.

    GDAL does not pass errno on (libtiff prints "No space left on device" to stderr, and a failed copy may
    delete its partial output), so a failure is reported as "no space left on device" when the filesystem
    has less free space than the step may write (``writes``: uncompressed bytes, an upper bound) or less
    than DISK_FULL_FREE_BYTES; with that much free, a full disk cannot have been the cause.
    """

    def __init__(self, path: Path, what: str, writes: int = 0, config: dict[str, str] | None = None) -> None:
        self.path, self.what, self.writes = path, what, writes
        self.env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, **(config or {}))
        self.errors = _GdalErrors()
        self.logger = logging.getLogger(RASTERIO_GDAL_LOGGER)

    def __enter__(self) -> None:
        # Entered around each GDAL call rather than for the whole writer: rasterio Envs must exit in the
        # reverse order of entry, and a source generator suspended inside the writer may hold its own Env.
        self.env.__enter__()
        _InfoLevel.hold()  # costs nothing while the writer holds it for its whole life
        self.logger.addHandler(self.errors)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.logger.removeHandler(self.errors)
        _InfoLevel.release()
        self.env.__exit__(exc_type, exc, tb)
        if isinstance(exc, SystemError) and str(exc).startswith(RASTERIO_UNKNOWN_ERROR):
            raise self.failure(str(exc)) from exc
        if isinstance(exc, rasterio.errors.RasterioError | CPLE_BaseError | OSError):
            # rasterio's GDAL exceptions carry GDAL's error class in ``errno``, not an OS errno.
            os_errno = None if isinstance(exc, rasterio.errors.RasterioError | CPLE_BaseError) else exc.errno
            raise self.failure(_describe(exc), os_errno) from exc
        if exc is None and self.errors.messages:
            raise self.failure("; ".join(self.errors.messages))

    def failure(self, detail: str, error_number: int | None = None) -> OutputError:
        """The OutputError for this step failing with ``detail`` (and the OS ``error_number`` if known)."""
        folder = self.path.parent
        free = _free_bytes(folder)
        short = free is not None and free < max(self.writes, DISK_FULL_FREE_BYTES)
        if error_number in (errno.ENOSPC, errno.EDQUOT) or short:
            space = "" if free is None else f" ({free} bytes free)"
            return OutputError(
                f"{self.path}: no space left on device in {folder}{space} while trying to {self.what}; "
                f"free some space or write the catalog elsewhere ({detail})"
            )
        return OutputError(f"{self.path}: could not {self.what}: {detail}")


def _crc(values: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(values).data)


class CogWriter:
    """Context manager: ``write(window, values)`` blocks in any order, get a verified COG at ``path``.

    On a clean exit the COG appears at ``path`` in one atomic rename, after it passed strict validation and
    a full read-back. On an exception inside the ``with`` (or a failure of the writer itself, raised as
    ``OutputError``) every temporary is deleted and ``path`` is left as it was (absent, or an older file).
    Pixels of windows never written are nodata. The default is the change raster: one float32 band,
    nodata NaN; ``count``/``dtype``/``nodata`` make others (e.g. a 3-band uint16 RGB composite).
    """

    def __init__(
        self,
        path: Path,
        grid: Grid,
        count: int = 1,
        dtype: str = DTYPE,
        nodata: float = NODATA,
        resampling: Resampling = OVERVIEW_RESAMPLING,
    ) -> None:
        if dtype not in PREDICTORS:
            raise ValueError(f"dtype {dtype}: the writer handles {', '.join(PREDICTORS)}")
        self.path = Path(path)
        self.grid = grid
        self.count, self.dtype, self.nodata = count, dtype, nodata
        self.resampling = resampling  # of the overviews: mode for categories (e.g. years), never averaged
        self._tmpdir: Path | None = None
        self._dst: rasterio.io.DatasetWriter | None = None
        self._crcs: dict[tuple[int, int], int] = {}
        """CRC-32 of each grid block (by block row, column) as last written in one piece."""

    def _step(self, what: str, writes: int = 0, config: dict[str, str] | None = None) -> _GdalStep:
        return _GdalStep(self.path, what, writes, config)

    @property
    def _raw_bytes(self) -> int:
        """The grid's pixels uncompressed: what the steps after the blocks write at most (+ overviews)."""
        return self.grid.width * self.grid.height * self.count * np.dtype(self.dtype).itemsize

    def __enter__(self) -> CogWriter:
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path}: the output folder {self.path.parent} does not exist")
        check_output_path(self.path)
        try:
            self._tmpdir = Path(
                tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.path.name}-", dir=self.path.parent)
            )
        except OSError as exc:
            raise self._step("create a temporary folder").failure(str(exc), exc.errno) from exc
        _InfoLevel.hold()  # released by _cleanup, with the temporary folder
        try:
            with self._step("create the temporary GeoTIFF"):
                self._dst = rasterio.open(
                    self._tmpdir / STREAM_NAME,
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
                    compress=STREAM_COMPRESSION,
                    BIGTIFF="IF_SAFER",
                )
        except BaseException:
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
        values = values.astype(self.dtype, copy=False)
        self._record(r0, c0, values)
        with self._step("write a block", values.nbytes):
            self._dst.write(values, window=window)

    def _record(self, r0: int, c0: int, values: np.ndarray) -> None:
        """Remember the CRC of every grid block this write covers whole; forget blocks it covers in part."""
        rows, cols = values.shape[1:]
        for br in range(r0 // BLOCK_SIZE, (r0 + rows - 1) // BLOCK_SIZE + 1):
            for bc in range(c0 // BLOCK_SIZE, (c0 + cols - 1) // BLOCK_SIZE + 1):
                top, left = br * BLOCK_SIZE, bc * BLOCK_SIZE
                bottom = min(top + BLOCK_SIZE, self.grid.height)
                right = min(left + BLOCK_SIZE, self.grid.width)
                if top >= r0 and left >= c0 and bottom <= r0 + rows and right <= c0 + cols:
                    self._crcs[br, bc] = _crc(values[:, top - r0 : bottom - r0, left - c0 : right - c0])
                else:
                    self._crcs.pop((br, bc), None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            dst, self._dst = self._dst, None
            if dst is not None:
                if exc_type is None:
                    with self._step("finish the temporary GeoTIFF", min(self._raw_bytes, GDAL_CACHE_BYTES)):
                        dst.close()
                else:  # the body's exception is the one to report; the temporaries go anyway
                    with contextlib.suppress(Exception), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
                        dst.close()
            if exc_type is None:
                self._finish()
        finally:
            self._cleanup()

    def _finish(self) -> None:
        assert self._tmpdir is not None
        stream, cog = self._tmpdir / STREAM_NAME, self._tmpdir / COG_TMP_NAME
        self._build_overviews(stream)
        self._copy_cog(stream, cog)
        self._verify(cog)
        try:
            with open(cog, "rb") as f:
                os.fsync(f.fileno())  # a write-back error (NFS, thin provisioning) surfaces here, not later
            os.replace(cog, self.path)
        except OSError as exc:
            raise self._step("move the COG into place").failure(str(exc), exc.errno) from exc

    def _overview_config(self) -> dict[str, str]:
        _, overview_tile = tile_sizes(self.grid.width, self.grid.height)
        return {
            "GDAL_TIFF_OVR_BLOCKSIZE": str(overview_tile),
            "GDAL_NUM_THREADS": GDAL_THREADS,
        }

    def _build_overviews(self, stream: Path) -> None:
        """GDAL builds the overview levels into the intermediate GeoTIFF, from disk."""
        levels = overview_levels(self.grid.width, self.grid.height)
        with (
            self._step("build overviews", self._raw_bytes // 3, self._overview_config()),
            rasterio.open(stream, "r+", driver="GTiff") as ds,
        ):
            if levels:
                ds.build_overviews([2**k for k in range(1, levels + 1)], self.resampling)
            ds.update_tags(OVERVIEW_RESAMPLING=self.resampling.name.upper())

    def _copy_cog(self, stream: Path, cog: Path) -> None:
        """One GDAL copy of the intermediate (with its overviews) laid out as the DEFLATE COG."""
        main_tile, _ = tile_sizes(self.grid.width, self.grid.height)
        with self._step("write the COG", self._raw_bytes * 4 // 3, self._overview_config()):
            gdal_copy(
                stream,
                cog,
                driver="GTiff",
                copy_src_overviews=True,
                tiled=True,
                blockxsize=main_tile,
                blockysize=main_tile,
                interleave="pixel",
                compress=COMPRESSION,
                zlevel=COMPRESSION_LEVEL,
                num_threads=GDAL_THREADS,
                predictor=PREDICTORS[self.dtype],
                BIGTIFF="IF_SAFER",
            )

    def _verify(self, cog: Path) -> None:
        """Strict COG validation, then every block of every band and level read back; full-resolution
        blocks written in one piece must equal what was written."""
        with self._step("validate the COG"):
            _, errors, warnings = cog_validate(cog, strict=True, quiet=True)
        unavoidable = expected_warnings(self.grid.width, self.grid.height)
        problems = errors + [w for w in warnings if w not in unavoidable]
        if problems:
            raise OutputError(f"{self.path}: the COG written is not valid: " + "; ".join(problems))
        # Read in bands of whole rows: GDAL decodes the tiles of one read on GDAL_THREADS threads.
        threads = {"GDAL_NUM_THREADS": GDAL_THREADS}
        step = self._step("verify the COG written (read every block back)", config=threads)
        with step, rasterio.open(cog) as src:
            if (src.width, src.height, src.count) != (self.grid.width, self.grid.height, self.count):
                raise OutputError(f"{self.path}: the COG written has the wrong shape")
            for chunk in self.grid.windows(BLOCK_SIZE * VERIFY_BLOCKS):
                data = src.read(window=chunk)
                r0, c0 = int(chunk.row_off), int(chunk.col_off)
                for w in Grid(self.grid.crs, self.grid.transform, chunk.width, chunk.height).windows():
                    key = ((r0 + w.row_off) // BLOCK_SIZE, (c0 + w.col_off) // BLOCK_SIZE)
                    if key in self._crcs and _crc(data[(slice(None), *w.toslices())]) != self._crcs[key]:
                        window = Window(c0 + w.col_off, r0 + w.row_off, w.width, w.height)
                        raise step.failure(f"block {window} read back differs from what was written")
            levels = len(src.overviews(1))
        for level in range(levels):
            step = self._step(f"verify overview {level} of the COG written", config=threads)
            with step, rasterio.open(cog, overview_level=level) as ovr:
                level_grid = Grid(self.grid.crs, self.grid.transform, ovr.width, ovr.height)
                for chunk in level_grid.windows(BLOCK_SIZE * VERIFY_BLOCKS):
                    ovr.read(window=chunk)

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            _InfoLevel.release()
