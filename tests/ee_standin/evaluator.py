"""Evaluates the part of Earth Engine's expression graph changecat sends, with numpy, faithfully.

An expression (the Cloud API ``Expression``: ``values`` + ``result``) evaluates to plain values (numbers,
strings, lists), collections of mirror images, filters, or lazy images (``images``). A lazy image renders
any pixel grid on request, so the server can compute a large request in strips of rows. Any algorithm or
argument form not implemented here raises ``EEError`` (HTTP 400): never a wrong value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from tests.ee_standin import images as im_ops
from tests.ee_standin.mirror import MirrorImage
from tests.ee_standin.values import (
    BYTES_PER_PIXEL,
    NPY_DTYPES,
    Collection,
    EEError,
    Element,
    Feature,
    Filter,
    Function,
    Image,
    ImageElement,
    Reducer,
    millis,
    need,
)

__all__ = ["BYTES_PER_PIXEL", "NPY_DTYPES", "EEError", "Evaluator", "Image", "to_json_value"]


def _calendar_range(start: int, end: int | None = None, field: str = "day_of_year") -> Filter:
    end = start if end is None else end
    if field not in ("year", "month"):
        raise EEError(f"Filter.calendarRange: field '{field}' is not implemented by the stand-in.")

    def test(im: Element) -> bool:
        d = datetime.fromtimestamp(im.properties["system:time_start"] / 1000, tz=UTC)
        v = d.year if field == "year" else d.month
        return start <= v <= end if start <= end else (v >= start or v <= end)

    return Filter(test)


def _date_range_contains(
    leftField: str | None = None,
    rightValue: Any = None,
    rightField: str | None = None,
    leftValue: Any = None,
) -> Filter:
    if not (isinstance(leftValue, tuple) and rightField):
        raise EEError("Filter.dateRangeContains: only leftValue=DateRange, rightField is implemented.")
    start, end = leftValue
    return Filter(lambda im: start <= im.properties.get(rightField, math.nan) < end)


def _intersects(
    leftField: str | None = None,
    rightValue: Any = None,
    rightField: str | None = None,
    leftValue: Any = None,
    maxError: Any = None,
) -> Filter:
    if isinstance(rightValue, Feature):
        rightValue = rightValue.geometry
    if leftField != ".all" or not isinstance(rightValue, BaseGeometry):
        raise EEError("Filter.intersects: only leftField='.all' with a geometry value is implemented.")
    return Filter(lambda im: im.footprint.intersects(rightValue))


def _geometry(kind: str) -> Callable:
    def make(coordinates: Any, crs: Any = None, geodesic: Any = None, evenOdd: Any = None, **_: Any):
        if crs not in (None, "EPSG:4326") and not (isinstance(crs, dict)):
            raise EEError(f"GeometryConstructors.{kind}: crs {crs!r} is not implemented by the stand-in.")
        return shape({"type": kind, "coordinates": coordinates})

    return make


def _load(collections: dict[str, tuple[Element, ...]], properties: dict[str, dict]) -> Callable:
    def load(id: str, version: Any = None) -> Collection:
        if id not in collections:
            raise EEError(
                f"ImageCollection asset '{id}' not found (does not exist or caller does not have access).",
                code=404,
                status="NOT_FOUND",
            )
        return Collection(collections[id], dict(properties.get(id, {})))

    return load


def _less_than(
    leftField: str | None = None,
    rightValue: Any = None,
    rightField: str | None = None,
    leftValue: Any = None,
) -> Filter:
    """Filter.lt(property, value): passes images whose property is less than the value (absent: fails)."""
    if not (leftField and rightField is None and isinstance(rightValue, int | float)):
        raise EEError("Filter.lessThan: only a property compared with a number is implemented.")
    return Filter(
        lambda im: (
            isinstance(im.properties.get(leftField), int | float) and im.properties[leftField] < rightValue
        )
    )


def _map(collection: Any, baseAlgorithm: Any, dropNulls: bool = False) -> Collection:
    """Collection.map over images: the function gets each image (with its properties, which e.g.
    Image.linkCollection reads); properties and footprint are kept."""
    fn = need(Function, "Collection.map")(baseAlgorithm)
    out = []
    for el in _coll(collection).images:
        if not isinstance(el, ImageElement):
            raise EEError("Collection.map: only maps over Sentinel-2 images are implemented by the stand-in.")
        result = fn.call(el)
        if result is None and dropNulls:
            continue
        out.append(ImageElement(im_ops.as_image(result), el.properties, el.footprint))
    return Collection(tuple(out))


def _link_collection(
    input: Any,
    imageCollection: Any,
    linkedBands: Any = None,
    linkedProperties: Any = None,
    matchPropertyName: str = "system:index",
) -> Image:
    """Image.linkCollection, as its algorithm documentation describes it: the bands ``linkedBands`` of the
    image of ``imageCollection`` whose ``matchPropertyName`` equals the input's are added to the input
    (overwriting bands of the same name); "If a matching image is not found, any new or updated bands will
    be fully masked". Footprint and properties stay the input's. Linked properties are not implemented."""
    if not isinstance(input, ImageElement):
        raise EEError("Image.linkCollection: only images of a collection (inside map) are implemented.")
    if linkedProperties:
        raise EEError("Image.linkCollection: linkedProperties is not implemented by the stand-in.")
    bands = [linkedBands] if isinstance(linkedBands, str) else list(linkedBands or [])
    key = input.properties.get(matchPropertyName)
    candidates = [el for el in _coll(imageCollection).images if isinstance(el, ImageElement)]
    match = next(
        (el for el in candidates if key is not None and el.properties.get(matchPropertyName) == key), None
    )
    return im_ops.link(input.image, match.image if match else None, bands)


_coll = need(Collection, "Collection")
WORLD = box(-180, -90, 180, 90)
"""Footprint of images made in the expression (constants): unbounded."""


def _collection_geometry(collection: Any, maxError: Any = None) -> BaseGeometry:
    """ee.Collection.geometry: "Extracts and merges the geometries of a collection" (Earth Engine API
    reference, ee.ImageCollection.geometry); for images their footprints, in WGS84. An empty collection
    gives an empty geometry collection (a GeometryCollection without geometries)."""
    footprints = [el.footprint for el in _coll(collection).images]
    return shapely.union_all(footprints) if footprints else shapely.GeometryCollection()


def _element_get(object: Any, property: str) -> Any:
    """Element.get: a property of a collection or image, null when it has none (the algorithm's doc)."""
    if isinstance(object, Collection | ImageElement | MirrorImage):
        return object.properties.get(property)
    raise EEError(f"Element.get: getting a property of a {type(object).__name__} is not implemented.")


def functions(
    collections: dict[str, tuple[Element, ...]], properties: dict[str, dict] | None = None
) -> dict[str, Callable[..., Any]]:
    """The algorithms the stand-in implements, by Earth Engine name."""
    return {
        "ImageCollection.load": _load(collections, properties or {}),
        "Element.get": _element_get,
        "Collection.map": _map,
        "ImageCollection.fromImages": lambda images: Collection(
            tuple(ImageElement(im_ops.as_image(i), {}, WORLD) for i in images)
        ),
        "ImageCollection.merge": lambda collection1, collection2: Collection(
            _coll(collection1).images + _coll(collection2).images
        ),
        "reduce.median": im_ops.median,
        "Filter.lessThan": _less_than,
        "ImageCollection.mosaic": lambda collection: im_ops.mosaic(_coll(collection)),
        "Collection.filter": lambda collection, filter: Collection(
            tuple(im for im in _coll(collection).images if need(Filter, "filter")(filter).test(im))
        ),
        "Collection.size": lambda collection: len(_coll(collection).images),
        "Collection.geometry": _collection_geometry,
        "AggregateFeatureCollection.array": lambda collection, property: [
            im.properties[property] for im in _coll(collection).images if property in im.properties
        ],
        "List.distinct": lambda list: list_distinct(list),
        "Date": lambda value, timeZone=None: millis(value),
        "DateRange": lambda start, end=None, timeZone=None: (
            millis(start),
            millis(end) if end is not None else millis(start) + 1,
        ),
        "Filter.dateRangeContains": _date_range_contains,
        "Filter.calendarRange": _calendar_range,
        "Filter.intersects": _intersects,
        "Filter.and": lambda filters: Filter(lambda im: all(f.test(im) for f in filters)),
        "Feature": lambda geometry, metadata=None: Feature(need(BaseGeometry, "Feature")(geometry)),
        "GeometryConstructors.Polygon": _geometry("Polygon"),
        "GeometryConstructors.MultiPolygon": _geometry("MultiPolygon"),
        "GeometryConstructors.Point": _geometry("Point"),
        "Reducer.sum": lambda: Reducer("sum"),
        "Image.constant": im_ops.constant,
        "Image.select": im_ops.select,
        "Image.rename": im_ops.rename,
        "Image.reduce": im_ops.reduce,
        "Image.add": im_ops.binary("add", np.add),
        "Image.subtract": im_ops.binary("subtract", np.subtract),
        "Image.multiply": im_ops.binary("multiply", np.multiply),
        "Image.divide": im_ops.binary("divide", np.divide),
        "Image.acos": im_ops.unary("acos", np.arccos, keep_type=True),
        "Image.clamp": im_ops.clamp,
        "Image.toFloat": lambda value: im_ops.cast(value, "float"),
        "Image.toDouble": lambda value: im_ops.cast(value, "double"),
        "Image.unmask": im_ops.unmask,
        "Image.updateMask": im_ops.update_mask,
        "Image.clip": im_ops.clip,
        "Image.bitwiseAnd": im_ops.binary("bitwiseAnd", im_ops.bitwise_and),
        "Image.eq": im_ops.binary("eq", im_ops.equal),
        "Image.gte": im_ops.binary("gte", im_ops.greater_equal),
        "Image.linkCollection": _link_collection,
        "Image.and": im_ops.binary("and", im_ops.logical_and),
        "Image.pow": im_ops.binary("pow", np.power),
        "Image.sqrt": im_ops.sqrt,
        "Image.round": im_ops.round_,
        "Image.toUint16": im_ops.to_integer("uint16"),
    }


def list_distinct(values: list) -> list:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


class Evaluator:
    """Evaluates one Cloud API expression against the served collections (id → images)."""

    def __init__(
        self, collections: dict[str, tuple[Element, ...]], properties: dict[str, dict] | None = None
    ) -> None:
        self.functions = functions(collections, properties)

    def evaluate(self, expression: dict) -> Any:
        values = expression.get("values", {})

        def node(n: dict, env: dict[str, Any], memo: dict[str, Any]) -> Any:
            if "constantValue" in n:
                return n["constantValue"]
            if "integerValue" in n:
                return int(n["integerValue"])
            if "valueReference" in n:
                ref = n["valueReference"]
                if ref not in memo:
                    memo[ref] = node(values[ref], env, memo)
                return memo[ref]
            if "argumentReference" in n:
                if n["argumentReference"] not in env:
                    raise EEError(f"Unknown argument reference '{n['argumentReference']}'.")
                return env[n["argumentReference"]]
            if "functionDefinitionValue" in n:
                return define(n["functionDefinitionValue"], env)
            if "arrayValue" in n:
                return [node(v, env, memo) for v in n["arrayValue"].get("values", [])]
            if "dictionaryValue" in n:
                return {k: node(v, env, memo) for k, v in n["dictionaryValue"].get("values", {}).items()}
            if "functionInvocationValue" in n:
                return invoke(n["functionInvocationValue"], env, memo)
            kind = next(iter(n), "?")
            raise EEError(f"Expression value of kind '{kind}' is not implemented by the stand-in.")

        def define(fd: dict, env: dict[str, Any]) -> Function:
            names = tuple(fd.get("argumentNames", []))

            def call(*args: Any) -> Any:
                if len(args) != len(names):
                    raise EEError(f"Function of {len(names)} arguments called with {len(args)}.")
                # Each call has its own memo: the body's values depend on the arguments.
                inner = {**env, **dict(zip(names, args, strict=True))}
                return node({"valueReference": fd["body"]}, inner, {})

            return Function(names, call)

        def invoke(call: dict, env: dict[str, Any], memo: dict[str, Any]) -> Any:
            name = call.get("functionName")
            fn = self.functions.get(name) if name else None
            if fn is None:
                raise EEError(
                    f"Algorithm '{name or call.get('functionReference')}' is not implemented by the "
                    "changecat Earth Engine stand-in."
                )
            args = {k: node(v, env, memo) for k, v in call.get("arguments", {}).items()}
            try:
                return fn(**args)
            except TypeError as exc:
                raise EEError(f"{name}: unsupported arguments {sorted(args)}: {exc}") from exc

        return node({"valueReference": expression["result"]}, {}, {})


def to_json_value(value: Any) -> Any:
    """A value as getInfo returns it; images, collections and filters are not implemented."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, BaseGeometry):
        return shapely.geometry.mapping(value)
    raise EEError(f"getInfo of a {type(value).__name__} is not implemented by the stand-in.")
