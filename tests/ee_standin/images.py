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
from tests.ee_standin.mirror import BAND_NAMES, PixelGrid
from tests.ee_standin.values import Collection, EEError, Image, Reducer, Rendered, promote


def as_image(value: Any) -> Image:
    if isinstance(value, Image):
        return value
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
        if name == "divide" and ptype == "int":
            ptype = "float"
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
