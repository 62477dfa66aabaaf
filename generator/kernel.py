"""The cosine of two AEF int8 embedding stacks in one fused, exact pass (numba), without float copies.

AEF stores ``v`` (int8) for ``x = (v / 127.5)**2 * sign(v)``. Renormalizing both vectors to unit length
cancels the constant ``1 / 127.5**2``, so the cosine is that of the integer vectors ``q = v * |v|``:

    cos = Σ qa·qb / sqrt(Σ qa² · Σ qb²)

Every ``q`` is at most 128² = 16384 in size, every product at most 2**28 (an int32) and a sum of 64 of
them below 2**35: the sums are exact in int64 (and in float64, below 2**53), so the only rounding is in
the final square root and division — closer to the truth than de-quantizing to float32 and summing
there (the straightforward formula, kept in
``generator.methods.unit_dot``). One pass reads each int8 value once; nothing 64-band-sized is allocated.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NODATA = -128
"""AEF nodata: −128 in all 64 bands of a pixel at once."""


@njit(nogil=True, cache=True, boundscheck=False)
def _nodata(v: np.ndarray, r: int, c: int) -> bool:  # pragma: no cover - numba
    """Whether pixel (r, c) of a stack is −128 in every band (checked only when band 0 is)."""
    if v[0, r, c] != NODATA:
        return False
    for k in range(1, v.shape[0]):  # noqa: SIM110 - numba compiles loops, not all() over a generator
        if v[k, r, c] != NODATA:
            return False
    return True


@njit(nogil=True, cache=True, boundscheck=False)
def _unit_dot_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    # Integer sums: each product of two q is below 2**28 (fits int32), a sum of 64 of them fits int64 and
    # is exact; 8-lane int32 arithmetic is ~1.5× faster than converting every q to float64 first.
    bands, rows, cols = a.shape
    dot = np.empty(cols, dtype=np.int64)
    norm_a = np.empty(cols, dtype=np.int64)
    norm_b = np.empty(cols, dtype=np.int64)
    for r in range(rows):
        dot[:] = 0
        norm_a[:] = 0
        norm_b[:] = 0
        for k in range(bands):
            row_a = a[k, r]
            row_b = b[k, r]
            for c in range(cols):
                va = np.int32(row_a[c])
                vb = np.int32(row_b[c])
                qa = va * abs(va)
                qb = vb * abs(vb)
                dot[c] += np.int64(qa * qb)
                norm_a[c] += np.int64(qa * qa)
                norm_b[c] += np.int64(qb * qb)
        for c in range(cols):
            if norm_a[c] == 0 or norm_b[c] == 0 or _nodata(a, r, c) or _nodata(b, r, c):
                out[r, c] = np.nan
            else:
                out[r, c] = np.float64(dot[c]) / np.sqrt(np.float64(norm_a[c]) * np.float64(norm_b[c]))


def unit_dot_int8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cosine (float64, rows × cols) of two int8 (bands, rows, cols) AEF stacks after
    de-quantizing and renormalizing; NaN where either pixel is nodata or has zero length.

    Views with any strides work (e.g. a bottom-up file flipped with ``[:, ::-1]``), without copying.
    """
    if a.shape != b.shape or a.dtype != np.int8 or b.dtype != np.int8 or a.ndim != 3:
        raise ValueError(
            f"two int8 (bands, rows, cols) stacks of one shape expected, got {a.shape}, {b.shape}"
        )
    out = np.empty(a.shape[1:], dtype=np.float64)
    _unit_dot_rows(a, b, out)
    return out


@njit(nogil=True, cache=True, boundscheck=False)
def _empty_bands(v: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    for k in range(v.shape[0]):
        out[k] = True
        for r in range(v.shape[1]):
            for c in range(v.shape[2]):
                if v[k, r, c] != NODATA:
                    out[k] = False
                    break
            if not out[k]:
                break


def empty_bands(stack: np.ndarray) -> np.ndarray:
    """Which bands of an int8 (bands, rows, cols) stack are −128 at every pixel (bool per band). A band
    stops at its first value, so a stack with data costs next to nothing."""
    out = np.empty(stack.shape[0], dtype=np.bool_)
    _empty_bands(stack, out)
    return out
