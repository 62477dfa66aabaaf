"""StatsAccumulator: known answers from numpy over the whole array, blocks fed in any order."""

from __future__ import annotations

import random

import numpy as np
import pytest
from affine import Affine

from generator.errors import NoDataError
from generator.grid import Grid
from generator.product import PERCENTILES, THRESHOLDS
from generator.stats import FINE_BINS, HISTOGRAM_BUCKETS, StatsAccumulator

COSINE_RANGE = (0.0, 2.0)
ANGLE_RANGE = (0.0, 1.0)
PIXEL_AREA = 100.0  # 10 m pixels


def blocks(values: np.ndarray, seed: int | None = 0, size: int = 256):
    """The array cut into a grid's windows, shuffled (seed None: row-major)."""
    grid = Grid("EPSG:32633", Affine(10, 0, 0, 0, -10, 0), values.shape[1], values.shape[0])
    windows = list(grid.windows(size))
    if seed is not None:
        random.Random(seed).shuffle(windows)
    return [values[w.toslices()] for w in windows]


def accumulate(values: np.ndarray, value_range=COSINE_RANGE, seed: int | None = 0) -> StatsAccumulator:
    acc = StatsAccumulator(value_range, PIXEL_AREA, values.size)
    for block in blocks(values, seed):
        acc.update(block)
    return acc


def assert_matches_numpy(values: np.ndarray, value_range=COSINE_RANGE) -> None:
    acc = accumulate(values, value_range)
    stats = acc.result()
    valid = values[np.isfinite(values)].astype(np.float64)
    assert stats.count == valid.size == acc.count
    assert stats.valid_percent == pytest.approx(valid.size / values.size * 100)
    assert stats.minimum == valid.min()
    assert stats.maximum == valid.max()
    assert stats.mean == pytest.approx(valid.mean(), rel=1e-12, abs=1e-15)
    assert stats.stddev == pytest.approx(valid.std(), rel=1e-9, abs=1e-15)
    expected_hist, _ = np.histogram(valid, bins=HISTOGRAM_BUCKETS, range=value_range)
    assert stats.histogram.buckets == expected_hist.tolist()
    assert (stats.histogram.minimum, stats.histogram.maximum) == value_range
    bound = (value_range[1] - value_range[0]) / FINE_BINS
    assert acc.fine_bin_width == bound
    for q in PERCENTILES:
        assert abs(stats.percentiles[f"p{q}"] - np.percentile(valid, q)) <= bound
    for area, t in zip(stats.changed_area, THRESHOLDS, strict=True):
        n = int(np.count_nonzero(values[np.isfinite(values)] > np.float32(t)))
        assert area.threshold == t
        assert area.area_km2 == pytest.approx(n * PIXEL_AREA / 1e6)
        assert area.fraction == pytest.approx(n / valid.size)


@pytest.fixture
def cosine_with_nodata() -> np.ndarray:
    """Uniform 0…2 values, 10 % NaN, both range ends present, odd shape (partial blocks)."""
    rng = np.random.default_rng(1)
    values = rng.uniform(0.0, 2.0, (900, 700)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    values[3, 3], values[800, 650] = 0.0, 2.0
    return values


@pytest.fixture
def skewed_angle() -> np.ndarray:
    """Most pixels barely change (exponential, angle method 0…1): percentiles sit in a few fine bins."""
    rng = np.random.default_rng(2)
    return np.clip(rng.exponential(0.02, (600, 600)), 0, 1).astype(np.float32)


@pytest.fixture
def with_all_nan_blocks(cosine_with_nodata: np.ndarray) -> np.ndarray:
    values = cosine_with_nodata.copy()
    values[:256, :] = np.nan  # the whole first row of blocks
    values[512:768, 256:512] = np.nan
    return values


@pytest.fixture
def all_nan() -> np.ndarray:
    return np.full((300, 300), np.nan, np.float32)


@pytest.fixture
def values_at_thresholds() -> np.ndarray:
    """Pixels exactly at each threshold (as float32 stores them) and at the range ends."""
    return np.array([[0.0, 0.1, 0.2, 0.3, 0.5, 2.0, np.nan]], np.float32)


@pytest.fixture
def nearly_constant() -> np.ndarray:
    """A large offset with a tiny spread: a naive sum-of-squares variance loses every digit here."""
    rng = np.random.default_rng(3)
    return (1.5 + rng.normal(0, 1e-4, (700, 700))).astype(np.float32)


def test_known_answers_cosine(cosine_with_nodata: np.ndarray) -> None:
    assert_matches_numpy(cosine_with_nodata)


def test_known_answers_skewed_angle(skewed_angle: np.ndarray) -> None:
    assert_matches_numpy(skewed_angle, ANGLE_RANGE)


def test_all_nan_blocks_are_skipped(with_all_nan_blocks: np.ndarray) -> None:
    assert_matches_numpy(with_all_nan_blocks)


def test_nearly_constant_values_keep_their_stddev(nearly_constant: np.ndarray) -> None:
    assert_matches_numpy(nearly_constant)
    assert accumulate(nearly_constant).result().stddev == pytest.approx(1e-4, rel=0.01)


def test_order_of_blocks_does_not_matter(cosine_with_nodata: np.ndarray) -> None:
    a = accumulate(cosine_with_nodata, seed=None).result()
    b = accumulate(cosine_with_nodata, seed=7).result()
    assert a.mean == pytest.approx(b.mean, rel=1e-14)
    assert a.stddev == pytest.approx(b.stddev, rel=1e-12)
    assert (a.histogram, a.percentiles, a.changed_area, a.count) == (
        b.histogram,
        b.percentiles,
        b.changed_area,
        b.count,
    )


def test_thresholds_are_strictly_greater(values_at_thresholds: np.ndarray) -> None:
    stats = accumulate(values_at_thresholds).result()
    # above 0.1: 0.2 0.3 0.5 2.0; above 0.2: 0.3 0.5 2.0; above 0.3: 0.5 2.0; above 0.5: 2.0
    assert [round(a.fraction * 6) for a in stats.changed_area] == [4, 3, 2, 1]
    assert stats.changed_area[-1].area_km2 == pytest.approx(1e-4)
    assert stats.valid_percent == pytest.approx(6 / 7 * 100)


def test_range_ends_fall_in_end_buckets(values_at_thresholds: np.ndarray) -> None:
    stats = accumulate(values_at_thresholds).result()
    assert stats.histogram.buckets[0] == 1 and stats.histogram.buckets[-1] == 1
    assert (stats.minimum, stats.maximum) == (0.0, 2.0)
    assert_matches_numpy(values_at_thresholds)


def test_extreme_percentiles_are_exact(cosine_with_nodata: np.ndarray) -> None:
    acc = accumulate(cosine_with_nodata)
    assert acc.percentile(0) == 0.0
    assert acc.percentile(100) == 2.0


def test_single_value_percentiles_are_that_value() -> None:
    acc = StatsAccumulator(COSINE_RANGE, PIXEL_AREA, 4)
    acc.update(np.array([[0.3, np.nan], [np.nan, np.nan]], np.float32))
    stats = acc.result()
    assert set(stats.percentiles.values()) == {float(np.float32(0.3))}
    assert stats.stddev == 0.0
    assert stats.valid_percent == 25.0


def test_out_of_range_values_count_in_end_buckets() -> None:
    acc = StatsAccumulator(ANGLE_RANGE, PIXEL_AREA, 3)
    acc.update(np.array([[-0.5, 0.5, 1.5]], np.float32))
    stats = acc.result()
    assert sum(stats.histogram.buckets) == 3
    assert stats.histogram.buckets[0] == 1 and stats.histogram.buckets[-1] == 1
    assert (stats.minimum, stats.maximum) == (-0.5, 1.5)


def test_infinite_values_are_nodata() -> None:
    acc = StatsAccumulator(COSINE_RANGE, PIXEL_AREA, 3)
    acc.update(np.array([[np.inf, 1.0, -np.inf]], np.float32))
    assert acc.count == 1
    assert acc.result().mean == 1.0


def test_all_nan_raises_no_data(all_nan: np.ndarray) -> None:
    acc = accumulate(all_nan)
    assert acc.count == 0
    with pytest.raises(NoDataError, match="no valid pixel"):
        acc.result()


@pytest.mark.parametrize(("value_range", "total"), [((1.0, 1.0), 10), ((0.0, 2.0), 0)])
def test_invalid_arguments(value_range: tuple[float, float], total: int) -> None:
    with pytest.raises(ValueError):
        StatsAccumulator(value_range, PIXEL_AREA, total)
