"""Change methods over unit-length embeddings: pure numpy functions of the per-pixel dot product."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

S2_DATASET = "COPERNICUS/S2_SR_HARMONIZED"
"""Sentinel-2 surface reflectance in Earth Engine: what the blog compared the embeddings with."""

EMBEDDING_INPUTS = "unit-length embedding vectors (de-quantized and renormalized where stored as int8)"


@dataclass(frozen=True)
class Method:
    """A change measure. ``from_dot`` maps a·b (the cosine of unit vectors) to change values; it is None
    for methods that do not compare embeddings, which only a source that knows ``dataset`` computes."""

    name: str
    title: str
    expression: str  # human-readable formula, recorded as processing:expression
    value_range: tuple[float, float]
    from_dot: Callable[[np.ndarray], np.ndarray] | None
    inputs: str = EMBEDDING_INPUTS  # what the two years' layers are, for the catalog's lineage
    dataset: str | None = None  # the dataset it reads, when not the source's embeddings


def _cosine(dot: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - dot, 0.0, 2.0).astype(np.float32, copy=False)


def _angle(dot: np.ndarray) -> np.ndarray:
    return (np.arccos(np.clip(dot, -1.0, 1.0)) / np.pi).astype(np.float32, copy=False)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cosine", "Cosine distance", "1 - sum(a_i * b_i, i=0..63)", (0.0, 2.0), _cosine),
        Method("angle", "Angular distance", "arccos(sum(a_i * b_i, i=0..63)) / pi", (0.0, 1.0), _angle),
        Method(
            "s2-difference",
            "Sentinel-2 difference",
            "sqrt(sum((b_k - a_k)^2, k in B4, B3, B2)), reflectance = DN / 10000",
            (0.0, 2.0),
            None,
            inputs=(
                "cloud-masked (Cloud Score+ cs_cdf >= 0.6) median Sentinel-2 L2A composites of B4, B3, B2 "
                "in reflectance"
            ),
            dataset=S2_DATASET,
        ),
    )
}
DEFAULT_METHOD = "cosine"
EMBEDDING_METHODS = tuple(name for name, m in METHODS.items() if m.from_dot is not None)


def dequantize_lut() -> np.ndarray:
    """AEF int8 → float32: ``(v / 127.5) ** 2 * sign(v)``, as a 256-entry table indexed by ``v & 0xFF``."""
    v = np.arange(256, dtype=np.int16)
    v = np.where(v > 127, v - 256, v).astype(np.float32)
    return ((v / 127.5) ** 2 * np.sign(v)).astype(np.float32)


def unit_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel cosine (float64) of two (bands, rows, cols) float stacks, renormalizing both to unit
    length: the straightforward formula, kept as the reference for ``generator.kernel``. Sums are in
    float64: float32 sums are off by up to ~5e-7 in the cosine and ~1e-5 in the angle near 0.

    Pixels where either vector has zero length come out NaN.
    """
    dot = np.einsum("bij,bij->ij", a, b, dtype=np.float64)
    norm_a = np.einsum("bij,bij->ij", a, a, dtype=np.float64)
    norms = np.sqrt(norm_a * np.einsum("bij,bij->ij", b, b, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dot / norms
    out[norms == 0] = np.nan
    return out
