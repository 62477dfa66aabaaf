"""Values of the stand-in's expression language: errors, lazy images, collections, filters, reducers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from tests.ee_standin.mirror import MirrorImage, PixelGrid

BYTES_PER_PIXEL = {"uint8": 1, "uint16": 2, "int": 4, "float": 4, "double": 8}
NPY_DTYPES = {"uint8": "|u1", "uint16": "<u2", "int": "<i4", "float": "<f4", "double": "<f8"}
INTEGER_TYPES = ("uint8", "uint16", "int")
"""Pixel types, narrowest first. Values are held as float64 whatever the type; the type decides the request
size and the NPY dtype of computePixels."""


class EEError(Exception):
    """An error Earth Engine answers with an HTTP status and a Google API error body."""

    def __init__(self, message: str, code: int = 400, status: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


Rendered = tuple[np.ndarray, np.ndarray]  # values (bands, h, w) float64, mask (bands, h, w) bool


@dataclass(frozen=True)
class Image:
    """A lazy image: band names, a pixel type and how to render any grid."""

    bands: tuple[str, ...]
    ptype: str  # one of BYTES_PER_PIXEL
    render: Callable[[PixelGrid], Rendered]


@dataclass(frozen=True)
class ImageElement:
    """An image of a collection that is not a mirror file: a lazy image with its properties and footprint
    (``Collection.map`` keeps both, as the image algorithms implemented keep an image's metadata)."""

    image: Image
    properties: dict
    footprint: BaseGeometry  # WGS84


Element = MirrorImage | ImageElement


@dataclass(frozen=True)
class Collection:
    images: tuple[Element, ...]
    properties: dict = field(default_factory=dict)  # a loaded collection's own (e.g. system:version)


@dataclass(frozen=True)
class Filter:
    test: Callable[[Element], bool]


@dataclass(frozen=True)
class Function:
    """A ``functionDefinitionValue``: called with positional arguments in ``argumentNames`` order."""

    argument_names: tuple[str, ...]
    call: Callable[..., Any]


@dataclass(frozen=True)
class Reducer:
    name: str


@dataclass(frozen=True)
class Feature:
    geometry: BaseGeometry


def promote(*types: str) -> str:
    if "double" in types:
        return "double"
    if "float" in types:
        return "float"
    if all(t == types[0] for t in types):
        return types[0]
    return "int"


def millis(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EEError(f"Date: cannot interpret {value!r} as a date")
    if isinstance(value, str):
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
        d = d if d.tzinfo else d.replace(tzinfo=UTC)
        return int(d.timestamp() * 1000)
    return int(value)


def need(kind: type, name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise EEError(f"{name}: expected a {kind.__name__}, got {type(value).__name__}.")
        return value

    return check
