"""Sentinel-2 expressions for the Earth Engine source: cloud-masked median composites and their difference.

As in the blog's comparison: a year of ``COPERNICUS/S2_SR_HARMONIZED`` over the area, scenes with
CLOUDY_PIXEL_PERCENTAGE under ``MAX_CLOUDY_PERCENT`` (Earth Engine's Sentinel-2 example's pre-filter), bands
B4, B3, B2, per-pixel median of the clear pixels. The median of a collection has no fixed projection: every
request names its grid.

Clear pixels come from Cloud Score+ (``GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED``), not QA60: in Earth
Engine the QA60 band is masked (empty) in scenes from about 2022-01-25 to 2024-02-28 ("QA60 ... contained
rasterized cloud mask polygons until Feb 2022, when these polygons stopped being produced. Starting in
February 2024, legacy-consistent QA60 bands are constructed from the MSK_CLASSI cloud classification bands",
developers.google.com/earth-engine/datasets/catalog/COPERNICUS_S2_HARMONIZED), so a QA60 mask drops every
pixel of those scenes. Cloud Score+ images "have the same id and system:index properties as the individual
Sentinel-2 L1C assets from which they were produced such that Cloud Score+ bands can be linked to source
images based on their shared system:index" (its catalog page): ``linkCollection`` adds ``cs_cdf`` to each
scene, and pixels with ``cs_cdf >= CLEAR_THRESHOLD`` are kept.
"""

from __future__ import annotations

import ee

S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
S2_RGB_BANDS = ("B4", "B3", "B2")
S2_METHOD = "s2-difference"
CLOUD_SCORE_COLLECTION = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
"""Cloud Score+ for the harmonized Sentinel-2 archive, one image per scene, same ``system:index``."""
CLOUD_SCORE_BAND = "cs_cdf"
"""Cloud Score+ band: likelihood (0..1) that the pixel is clear, from its score distribution through time."""
CLEAR_THRESHOLD = 0.6
"""Pixels with ``cs_cdf`` at or above this are clear: the value Earth Engine's Cloud Score+ examples use
(0.5-0.65 suggested; higher is stricter)."""
MAX_CLOUDY_PERCENT = 20
"""Scenes with CLOUDY_PIXEL_PERCENTAGE at or above this are left out (Earth Engine's S2 example)."""
REFLECTANCE_SCALE = 10000
"""Surface reflectance = DN / 10000."""
CONTEXT_NODATA = 0
"""Context composites: DN 0 where no clear observation (S2 L2A's own nodata value)."""
MAX_DN = 65535


def mask_clouds(image: ee.Image) -> ee.Image:
    """Keep the pixels Cloud Score+ grades clear (``cs_cdf >= CLEAR_THRESHOLD``); the image must carry the
    linked ``cs_cdf`` band (a scene without a Cloud Score+ image has it fully masked: no pixel is kept)."""
    return image.updateMask(image.select(CLOUD_SCORE_BAND).gte(CLEAR_THRESHOLD))


def composite(
    year: int, area: ee.Geometry, max_cloudy_percent: float | None = MAX_CLOUDY_PERCENT
) -> ee.Image:
    """The year's cloud-masked median of B4, B3, B2 (DN, bands keep their names: ``median()``)."""
    images = (
        ee.ImageCollection(S2_COLLECTION).filterDate(f"{year}-01-01", f"{year + 1}-01-01").filterBounds(area)
    )
    if max_cloudy_percent is not None:
        images = images.filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", max_cloudy_percent))
    linked = images.linkCollection(ee.ImageCollection(CLOUD_SCORE_COLLECTION), [CLOUD_SCORE_BAND])
    clear = linked.map(mask_clouds).select(list(S2_RGB_BANDS))
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
