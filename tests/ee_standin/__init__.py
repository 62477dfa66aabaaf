"""A local stand-in for the Earth Engine REST API over an AEF-format mirror, for the real ee client.

``StandinServer(mirror).start()`` serves it on 127.0.0.1; ``python -m tests.ee_standin --mirror DIR --port N``
runs it standalone. Besides the mirror's collection it serves a synthetic ``COPERNICUS/S2_SR_HARMONIZED``
over the mirror's bounds and years (``tests/ee_standin/s2.py``).
"""

from tests.ee_standin.server import AEF_COLLECTION, Fault, StandinServer

__all__ = ["AEF_COLLECTION", "Fault", "StandinServer"]
