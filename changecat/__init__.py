"""changecat: change products from satellite-embedding datasets, as COGs in a static STAC catalog."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("changecat")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
