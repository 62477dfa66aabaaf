"""Sentinel-2 expressions for the Earth Engine source: cloud-masked median composites and their difference.

As in the blog's comparison and Earth Engine's own Sentinel-2 example: a year of
``COPERNICUS/S2_SR_HARMONIZED`` over the area, scenes with CLOUDY_PIXEL_PERCENTAGE under
``MAX_CLOUDY_PERCENT`` (the example's pre-filter), pixels masked where QA60 bit 10 (opaque clouds) or bit 11
(cirrus) is set, bands B4, B3, B2, per-pixel median.
The median of a collection has no fixed projection: every request names its grid.

Note: QA60 carries no cloud flags in scenes of processing baseline 04.00+ (25 Jan 2022 to about Feb 2024),
so composites of those years are only as cloud-free as the CLOUDY_PIXEL_PERCENTAGE pre-filter and the median
make them.
"""

from __future__ import annotations

import ee

S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
S2_RGB_BANDS = ("B4", "B3", "B2")
S2_METHOD = "s2-difference"
QA_BAND = "QA60"
CLOUD_BIT = 10
"""QA60 bit 10: opaque clouds."""
CIRRUS_BIT = 11
"""QA60 bit 11: cirrus."""
MAX_CLOUDY_PERCENT = 20
"""Scenes with CLOUDY_PIXEL_PERCENTAGE at or above this are left out (Earth Engine's S2 example)."""
REFLECTANCE_SCALE = 10000
"""Surface reflectance = DN / 10000."""
CONTEXT_NODATA = 0
"""Context composites: DN 0 where no clear observation (S2 L2A's own nodata value)."""
MAX_DN = 65535


def mask_clouds(image: ee.Image) -> ee.Image:
    """Mask pixels flagged as opaque cloud or cirrus in QA60 (both bits must be zero)."""
    qa = image.select(QA_BAND)
    clear = qa.bitwiseAnd(1 << CLOUD_BIT).eq(0).And(qa.bitwiseAnd(1 << CIRRUS_BIT).eq(0))
    return image.updateMask(clear)


def composite(
    year: int, area: ee.Geometry, max_cloudy_percent: float | None = MAX_CLOUDY_PERCENT
) -> ee.Image:
    """The year's cloud-masked median of B4, B3, B2 (DN, bands keep their names: ``median()``)."""
    images = (
        ee.ImageCollection(S2_COLLECTION).filterDate(f"{year}-01-01", f"{year + 1}-01-01").filterBounds(area)
    )
    if max_cloudy_percent is not None:
        images = images.filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", max_cloudy_percent))
    clear = images.map(mask_clouds).select(list(S2_RGB_BANDS))
    return clear.merge(ee.ImageCollection([_no_observation()])).median()


def _no_observation() -> ee.Image:
    """A fully masked B4, B3, B2 image. Merged into every year's scenes it leaves the median unchanged but
    guarantees its bands: a year without scenes over the area (L2A coverage is global only from about
    2019) gives a composite of nodata rather than an image without bands, which Earth Engine refuses."""
    return ee.Image.constant([0, 0, 0]).rename(list(S2_RGB_BANDS)).toUint16().updateMask(0)


def context_image(
    year: int, area: ee.Geometry, max_cloudy_percent: float | None = MAX_CLOUDY_PERCENT
) -> ee.Image:
    """The composite as uint16 DN, CONTEXT_NODATA where no clear observation. Values are rounded before
    the cast, and a clear pixel never comes out as the nodata value (clamped to ≥ 1)."""
    comp = composite(year, area, max_cloudy_percent)
    return comp.round().clamp(CONTEXT_NODATA + 1, MAX_DN).unmask(CONTEXT_NODATA, False).toUint16()


def difference(
    from_year: int, to_year: int, area: ee.Geometry, max_cloudy_percent: float | None = MAX_CLOUDY_PERCENT
) -> ee.Image:
    """sqrt(Σ_b (to_b − from_b)²) over B4, B3, B2 in reflectance; masked where either composite is."""
    a = composite(from_year, area, max_cloudy_percent).toFloat().divide(REFLECTANCE_SCALE)
    b = composite(to_year, area, max_cloudy_percent).toFloat().divide(REFLECTANCE_SCALE)
    return b.subtract(a).pow(2).reduce(ee.Reducer.sum()).sqrt()
