"""What changecat records about each source dataset: licence, attribution, producer, citation."""

from __future__ import annotations

from dataclasses import dataclass

from generator.methods import S2_DATASET
from generator.sources.base import AEF_DATASET


@dataclass(frozen=True)
class DatasetInfo:
    """Licence, attribution and citation of a source dataset, recorded on every collection made from it."""

    title: str
    license: str
    license_url: str | None
    attribution: str
    producer: str
    page: str
    doi: str | None = None
    citation: str | None = None
    keywords: tuple[str, ...] = ()


AEF_INFO = DatasetInfo(
    title="AlphaEarth Foundations Satellite Embedding (annual)",
    license="CC-BY-4.0",
    license_url="https://creativecommons.org/licenses/by/4.0/",
    attribution=(
        "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind."
    ),
    producer="Google and Google DeepMind",
    page="https://developers.google.com/earth-engine/datasets/catalog/GOOGLE_SATELLITE_EMBEDDING_V1_ANNUAL",
    doi="10.48550/arXiv.2507.22291",
    citation=(
        "Brown, C. F., et al. (2025). AlphaEarth Foundations: An embedding field model for accurate and "
        "efficient global mapping from sparse label data. "
        "arXiv:2507.22291. https://doi.org/10.48550/arXiv.2507.22291"
    ),
    keywords=("AlphaEarth Foundations", "Google", "Google DeepMind"),
)
S2_INFO = DatasetInfo(
    title="Sentinel-2 MSI Level-2A surface reflectance (harmonized)",
    license="other",
    license_url="https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
    attribution="Contains modified Copernicus Sentinel data, processed by Google Earth Engine.",
    producer="European Union / ESA / Copernicus",
    page="https://developers.google.com/earth-engine/datasets/catalog/COPERNICUS_S2_SR_HARMONIZED",
    keywords=("Sentinel-2", "Copernicus"),
)
DATASETS: dict[str, DatasetInfo] = {AEF_DATASET: AEF_INFO, S2_DATASET: S2_INFO}


def dataset_info(dataset: str) -> DatasetInfo:
    """What we know about a dataset; unknown datasets get a neutral entry (licence "other")."""
    return DATASETS.get(
        dataset,
        DatasetInfo(title=dataset, license="other", license_url=None, attribution="", producer="", page=""),
    )
