"""Image algorithms of the stand-in: lazy images rendered on any pixel grid, band by band with a mask.

Band matching, masks and pixel types follow Earth Engine's rules for the operations implemented; anything
else raises ``EEError`` (HTTP 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

from generator.grid import to_crs
from tests.ee_standin.mirror import BAND_NAMES, MirrorImage, PixelGrid
from tests.ee_standin.values import (
    INTEGER_TYPES,
    Collection,
    EEError,
    Image,
    ImageElement,
    Reducer,
    Rendered,
    promote,
)

UINT_RANGES = {"uint8": (0, 255), "uint16": (0, 65535), "int": (-(2**31), 2**31 - 1)}


def as_image(value: Any) -> Image:
    if isinstance(value, Image):
        return value
    if isinstance(value, ImageElement):
        return value.image
    if isinstance(value, int | float) and not isinstance(value, bool):
        return constant(value)
    raise EEError(f"Expected an Image, got {type(value).__name__}.")


def constant(value: Any) -> Image:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int | float) for v in values):
        raise EEError(f"Image.constant: invalid value {value!r}")
    names = ("constant",) if len(values) == 1 else tuple(f"constant_{i}" for i in range(len(values)))
    ptype = "int" if all(isinstance(v, int) for v in values) else "double"

    def render(g: PixelGrid) -> Rendered:
        data = np.array(values, dtype=np.float64)[:, None, None] * np.ones((1, g.height, g.width))
        return data, np.ones(data.shape, dtype=bool)

    return Image(names, ptype, render)


def mosaic(coll: Collection) -> Image:
    """Later images on top, as Earth Engine's ``mosaic``; only images touching the grid are read."""
    images = coll.images
    if not all(isinstance(im, MirrorImage) for im in images):
        raise EEError("ImageCollection.mosaic: only mosaics of the embedding mirror are implemented.")

    def render(g: PixelGrid) -> Rendered:
        data = np.zeros((len(BAND_NAMES), g.height, g.width), dtype=np.float64)
        mask = np.zeros((g.height, g.width), dtype=bool)
        footprint = g.footprint_wgs84()
        for im in images:
            if not im.footprint.intersects(footprint):
                continue
            x, valid = im.read(g)
            data[:, valid] = x[:, valid]
            mask |= valid
        return data, np.broadcast_to(mask, data.shape).copy()

    return Image(tuple(BAND_NAMES) if images else (), "float", render)


def unary(name: str, fn: Callable[[np.ndarray], np.ndarray], keep_type: bool = True) -> Callable:
    def op(value: Any) -> Image:
        im = as_image(value)

        def render(g: PixelGrid) -> Rendered:
            data, mask = im.render(g)
            with np.errstate(invalid="ignore", divide="ignore"):
                return fn(data), mask

        return Image(im.bands, im.ptype if keep_type else "double", render)

    return op


def binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    def op(image1: Any, image2: Any) -> Image:
        a, b = as_image(image1), as_image(image2)
        na, nb = len(a.bands), len(b.bands)
        if not (na == nb or na == 1 or nb == 1) or 0 in (na, nb):
            raise EEError(
                f"Image.{name}: Images must contain the same number of bands or only 1 band. "
                f"Got {na} and {nb}."
            )
        bands = a.bands if na >= nb else b.bands

        def render(g: PixelGrid) -> Rendered:
            da, ma = a.render(g)
            db, mb = b.render(g)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                return fn(da, db), ma & mb

        ptype = promote(a.ptype, b.ptype)
        if name == "divide" and ptype in INTEGER_TYPES:
            ptype = "float"
        elif name in ("add", "subtract", "multiply") and ptype in ("uint8", "uint16"):
            ptype = "int"  # Earth Engine widens by value range; unsigned differences can be negative
        elif name in ("eq", "gte", "and"):
            ptype = "uint8"  # comparisons and logical operators give 0/1
        elif name == "pow" and ptype in INTEGER_TYPES:
            ptype = "double"
        elif name == "bitwiseAnd" and ptype not in INTEGER_TYPES:
            raise EEError("Image.bitwiseAnd: bitwise operators need integer images.")
        return Image(bands, ptype, render)

    return op


def select(input: Any, bandSelectors: list, newNames: list | None = None) -> Image:
    im = as_image(input)
    idx: list[int] = []
    for sel in bandSelectors:
        if isinstance(sel, int):
            if not 0 <= sel < len(im.bands):
                raise EEError(f"Image.select: Band index out of bounds: {sel}.")
            idx.append(sel)
            continue
        hits = [i for i, b in enumerate(im.bands) if re.fullmatch(str(sel), b)]
        if not hits:
            raise EEError(f"Image.select: Pattern '{sel}' did not match any bands.")
        idx.extend(hits)
    names = tuple(newNames) if newNames else tuple(im.bands[i] for i in idx)
    if len(names) != len(idx):
        raise EEError("Image.select: The number of new names must match the number of selected bands.")

    def render(g: PixelGrid) -> Rendered:
        data, mask = im.render(g)
        return data[idx], mask[idx]

    return Image(names, im.ptype, render)


def rename(input: Any, names: list) -> Image:
    im = as_image(input)
    if len(names) != len(im.bands):
        raise EEError(f"Image.rename: Can't rename {len(im.bands)} bands to {len(names)} names.")
    return Image(tuple(names), im.ptype, im.render)


def reduce(image: Any, reducer: Any) -> Image:
    im = as_image(image)
    if not isinstance(reducer, Reducer) or reducer.name != "sum":
        raise EEError(f"Image.reduce: reducer {reducer!r} is not implemented by the stand-in.")

    def render(g: PixelGrid) -> Rendered:
        data, mask = im.render(g)
        total = np.where(mask, data, 0.0).sum(axis=0, dtype=np.float64)[None]
        return total, mask.any(axis=0)[None]

    return Image(("sum",), "double", render)


def clamp(input: Any, low: float, high: float) -> Image:
    im = unary("clamp", lambda d: np.clip(d, low, high))(input)
    return im


def unmask(input: Any, value: Any = None, sameFootprint: bool = True) -> Image:
    im = as_image(input)
    fill = constant(0) if value is None else as_image(value)
    if len(fill.bands) not in (1, len(im.bands)):
        raise EEError("Image.unmask: value must have 1 band or as many bands as the input.")

    def render(g: PixelGrid) -> Rendered:
        data, mask = im.render(g)
        fdata, fmask = fill.render(g)
        out = np.where(mask, data, fdata)
        return out, mask | np.broadcast_to(fmask, mask.shape)

    return Image(im.bands, promote(im.ptype, fill.ptype), render)


def update_mask(image: Any, mask: Any) -> Image:
    im, m = as_image(image), as_image(mask)
    if len(m.bands) not in (1, len(im.bands)):
        raise EEError("Image.updateMask: mask must have 1 band or as many bands as the image.")

    def render(g: PixelGrid) -> Rendered:
        data, dmask = im.render(g)
        mdata, mmask = m.render(g)
        return data, dmask & np.broadcast_to(mmask & (mdata != 0), dmask.shape)

    return Image(im.bands, im.ptype, render)


def clip(input: Any, geometry: Any) -> Image:
    im = as_image(input)
    if not isinstance(geometry, BaseGeometry):
        raise EEError("Image.clip: geometry must be a Geometry.")

    def render(g: PixelGrid) -> Rendered:
        data, mask = im.render(g)
        inside = ~geometry_mask([to_crs(geometry, "EPSG:4326", g.crs)], (g.height, g.width), g.transform)
        return data, mask & inside[None]

    return Image(im.bands, im.ptype, render)


def cast(value: Any, ptype: str) -> Image:
    """toFloat / toDouble: the same pixels with another pixel type (it only changes the request size)."""
    im = as_image(value)
    return Image(im.bands, ptype, im.render)


def bitwise_and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_and(a.astype(np.int64), b.astype(np.int64)).astype(np.float64)


def logical_and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a != 0) & (b != 0)).astype(np.float64)


def equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b).astype(np.float64)


def greater_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a >= b).astype(np.float64)


def link(image: Image, match: Image | None, bands: list[str]) -> Image:
    """``image`` with ``bands`` of ``match`` added (replacing bands of the same name); fully masked when
    there is no match. The linked bands keep the match's pixel type (when types differ the stand-in
    answers HTTP 400 rather than guess how Earth Engine mixes them)."""
    if not bands:
        raise EEError("Image.linkCollection: no linkedBands given.")
    if match is not None:
        missing = [b for b in bands if b not in match.bands]
        if missing:
            raise EEError(f"Image.linkCollection: Pattern '{missing[0]}' did not match any bands.")
    kept = [b for b in image.bands if b not in bands]
    names = tuple(kept) + tuple(bands)
    linked_type = match.ptype if match is not None else "float"
    ptype = image.ptype if not kept else promote(image.ptype, linked_type)

    def render(g: PixelGrid) -> Rendered:
        data, mask = image.render(g)
        idx = [image.bands.index(b) for b in kept]
        if match is None:
            ldata = np.zeros((len(bands), g.height, g.width))
            lmask = np.zeros(ldata.shape, dtype=bool)
        else:
            mdata, mmask = match.render(g)
            sel = [match.bands.index(b) for b in bands]
            ldata, lmask = mdata[sel], mmask[sel]
        return np.concatenate([data[idx], ldata]), np.concatenate([mask[idx], lmask])

    return Image(names, ptype, render)


def sqrt(value: Any) -> Image:
    """Square root; a float image stays float, other types become double (NaN below 0)."""
    im = unary("sqrt", np.sqrt)(value)
    return Image(im.bands, "float" if im.ptype == "float" else "double", im.render)


def round_(value: Any) -> Image:
    """Nearest integer. Earth Engine's rule for exact halves is not documented: a half answers HTTP 400."""
    im = as_image(value)

    def render(g: PixelGrid) -> Rendered:
        data, mask = im.render(g)
        frac = np.abs(data - np.trunc(data))
        if np.any(mask & (frac == 0.5)):
            raise EEError("Image.round: rounding an exact half is not implemented by the stand-in.")
        return np.round(data), mask

    return Image(im.bands, im.ptype, render)


def to_integer(ptype: str) -> Callable[[Any], Image]:
    """toUint16 etc.: saturate to the type's range; a fraction answers HTTP 400 (Earth Engine's casting of
    fractions is not documented, and changecat rounds before casting)."""
    low, high = UINT_RANGES[ptype]

    def cast_(value: Any) -> Image:
        im = as_image(value)

        def render(g: PixelGrid) -> Rendered:
            data, mask = im.render(g)
            if np.any(mask & (data != np.trunc(data))):
                raise EEError(
                    f"Image.to{ptype.title()}: casting fractions is not implemented by the stand-in."
                )
            return np.clip(data, low, high), mask

        return Image(im.bands, ptype, render)

    return cast_


def median(collection: Any) -> Image:
    """``reduce.median`` (ImageCollection.median()): per band and pixel, the median of the unmasked values
    of all images; band names kept. Earth Engine's median of an even count is not documented, so an even
    count of unmasked values answers HTTP 400 (the synthetic Sentinel-2 data has odd counts everywhere)."""
    if not isinstance(collection, Collection):
        raise EEError("reduce.median: expected an ImageCollection.")
    images = [as_image(e) for e in collection.images if isinstance(e, ImageElement)]
    if len(images) != len(collection.images):
        raise EEError("reduce.median: only collections of Sentinel-2 images are implemented by the stand-in.")
    if not images:
        return Image(
            (), "double", lambda g: (np.zeros((0, g.height, g.width)), np.zeros((0, g.height, g.width), bool))
        )
    bands, ptype = images[0].bands, images[0].ptype
    if any(im.bands != bands for im in images):
        raise EEError("reduce.median: images with different bands are not implemented by the stand-in.")

    def render(g: PixelGrid) -> Rendered:
        stack = np.full((len(images), len(bands), g.height, g.width), np.inf)
        for i, im in enumerate(images):
            data, mask = im.render(g)
            stack[i][mask] = data[mask]
        count = np.isfinite(stack).sum(axis=0)
        if np.any((count % 2 == 0) & (count > 0)):
            raise EEError(
                "reduce.median: the median of an even number of values is not implemented by the stand-in."
            )
        stack.sort(axis=0)
        mid = np.take_along_axis(stack, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
        valid = count > 0
        return np.where(valid, mid, 0.0), valid

    return Image(bands, ptype, render)
