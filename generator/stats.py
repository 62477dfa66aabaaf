"""Streaming statistics of a change raster: moments, histogram, percentiles, changed area.

Blocks arrive in any order; memory is constant (a fixed fine histogram plus a few numbers), so the
statistics of a region of any size are exact (moments, counts, histogram) or bounded (percentiles).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from generator.errors import NoDataError
from generator.product import PERCENTILES, THRESHOLDS, ChangedArea, Histogram, Stats

HISTOGRAM_BUCKETS = 256
"""Buckets of the published histogram (raster:histogram): fine enough to draw, small in the JSON."""

FINE_BINS = 2**16
"""Bins of the internal histogram the percentiles come from. The error of a percentile is at most one
fine bin width: (value_range span) / 65536, i.e. 3.1e-5 for cosine (0…2), 1.5e-5 for angle (0…1).
A multiple of HISTOGRAM_BUCKETS, so the published histogram is an exact regrouping of it."""

M2_PER_KM2 = 1e6


@njit(nogil=True, cache=True, boundscheck=False)
def _block_moments(
    values: np.ndarray, lo: float, scale: float, fine: np.ndarray
) -> tuple[int, float, float, float, float]:  # pragma: no cover - numba
    """One block's finite values in two passes, without temporaries: (count, mean, sum of squared
    deviations from that mean, min, max); their fine bins are added to ``fine``. Sums go row by row, then
    over the rows, which keeps float64 rounding near numpy's pairwise sums."""
    rows, cols = values.shape
    n = 0
    total = 0.0
    vmin = np.inf
    vmax = -np.inf
    top = fine.size - 1
    for r in range(rows):
        row_total = 0.0
        for c in range(cols):
            x = values[r, c]
            if x != x or x == np.inf or x == -np.inf:
                continue
            v = np.float64(x)
            n += 1
            row_total += v
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            f = (v - lo) * scale  # clamped as a float: int() of a huge float is undefined
            fine[0 if f < 0 else (top if f >= top else int(f))] += 1
        total += row_total
    if n == 0:
        return 0, 0.0, 0.0, vmin, vmax
    mean = total / n
    m2 = 0.0
    for r in range(rows):
        row_m2 = 0.0
        for c in range(cols):
            x = values[r, c]
            if not (x != x or x == np.inf or x == -np.inf):
                d = np.float64(x) - mean
                row_m2 += d * d
        m2 += row_m2
    return n, mean, m2, vmin, vmax


class StatsAccumulator:
    """Accumulates statistics of float32 blocks (NaN = nodata) over a raster of ``total_pixels`` pixels.

    - minimum/maximum/count/changed area are exact; mean and stddev (population, ddof=0) are merged
      from per-block float64 moments (Chan et al.), so they are stable for any number of blocks;
    - the histogram has HISTOGRAM_BUCKETS equal-width buckets over ``value_range``; values outside the
      range (which the methods never produce) are counted in the end buckets, so buckets sum to count;
    - percentiles follow numpy's default ("linear") definition, estimated from FINE_BINS bins over
      ``value_range`` with order statistics spread evenly inside a bin: error ≤ one fine bin width;
    - changed area counts pixels strictly above each threshold, compared in the data's dtype;
    - non-finite values (NaN, ±inf) are nodata.
    """

    def __init__(self, value_range: tuple[float, float], pixel_area_m2: float, total_pixels: int) -> None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        if total_pixels <= 0:
            raise ValueError(f"total_pixels must be positive, got {total_pixels}")
        self.value_range = (lo, hi)
        self.pixel_area_m2 = float(pixel_area_m2)
        self.total_pixels = int(total_pixels)
        self._scale = FINE_BINS / (hi - lo)
        self._fine = np.zeros(FINE_BINS, dtype=np.int64)
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the mean
        self._min = math.inf
        self._max = -math.inf
        self._above = np.zeros(len(THRESHOLDS), dtype=np.int64)

    @property
    def count(self) -> int:
        """Valid (finite) pixels seen so far."""
        return self._count

    @property
    def fine_bin_width(self) -> float:
        """The error bound of the percentiles."""
        return (self.value_range[1] - self.value_range[0]) / FINE_BINS

    def update(self, values: np.ndarray) -> None:
        """Add one block; NaN pixels are ignored."""
        raw = np.asarray(values)
        if raw.dtype not in (np.float32, np.float64):
            raw = raw.astype(np.float64)
        if raw.ndim != 2:
            raw = raw.reshape(1, -1)
        n, block_mean, block_m2, block_min, block_max = _block_moments(
            raw, self.value_range[0], self._scale, self._fine
        )
        if n == 0:
            return
        # Compare in the data's own type: a float32 pixel equal to float32(0.1) is not above 0.1.
        for i, t in enumerate(THRESHOLDS):
            self._above[i] += np.count_nonzero(raw > np.asarray(t, dtype=raw.dtype))
        total = self._count + n
        delta = block_mean - self._mean
        self._mean += delta * n / total
        self._m2 += block_m2 + delta * delta * self._count * n / total
        self._count = total
        self._min = min(self._min, block_min)
        self._max = max(self._max, block_max)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0…100, numpy's linear definition), within one fine bin width."""
        if self._count == 0:
            raise NoDataError("no valid pixel: percentiles of an all-nodata raster are undefined")
        h = (self._count - 1) * q / 100.0
        k = math.floor(h)
        lower = self._order_statistic(k)
        if h == k:
            return lower
        return lower + (h - k) * (self._order_statistic(k + 1) - lower)

    def _order_statistic(self, k: int) -> float:
        """Estimate of the k-th smallest value (0-based): it lies in the right bin, so error ≤ width."""
        if k == 0:
            return self._min
        if k == self._count - 1:
            return self._max
        cumulative = np.cumsum(self._fine)
        b = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[b - 1]) if b > 0 else 0
        in_bin = int(self._fine[b])
        width = self.fine_bin_width
        estimate = self.value_range[0] + (b + (k - before + 0.5) / in_bin) * width
        # The exact extremes can only tighten the estimate.
        return min(max(estimate, self._min), self._max)

    def result(self) -> Stats:
        """The statistics so far. Raises NoDataError when no valid pixel was seen (nothing to describe)."""
        if self._count == 0:
            raise NoDataError("no valid pixel in the change raster: every pixel is nodata")
        n = self._count
        buckets = self._fine.reshape(HISTOGRAM_BUCKETS, -1).sum(axis=1)
        return Stats(
            minimum=self._min,
            maximum=self._max,
            mean=self._mean,
            stddev=math.sqrt(max(self._m2, 0.0) / n),
            count=n,
            valid_percent=n / self.total_pixels * 100.0,
            histogram=Histogram(self.value_range[0], self.value_range[1], [int(b) for b in buckets]),
            percentiles={f"p{q}": self.percentile(q) for q in PERCENTILES},
            changed_area=[
                ChangedArea(
                    threshold=t,
                    area_km2=int(above) * self.pixel_area_m2 / M2_PER_KM2,
                    fraction=int(above) / n,
                )
                for t, above in zip(THRESHOLDS, self._above, strict=True)
            ],
        )
