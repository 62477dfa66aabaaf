"""A local stand-in for the Earth Engine REST API over an AEF-format mirror, for the real ee client.

``StandinServer(mirror).start()`` serves it on 127.0.0.1; ``python -m tests.ee_standin --mirror DIR --port N``
runs it standalone. Besides the mirror's collection it serves a synthetic ``COPERNICUS/S2_SR_HARMONIZED``
over the mirror's bounds and years, with QA60 masked in the scenes Earth Engine has it masked, and its Cloud
Score+ collection (``tests/ee_standin/s2.py``). ``tests/ee_standin/oauth.py`` is a local OAuth token
endpoint for real key and credential files; the stand-in can be told to accept only the tokens it issued.
"""

from tests.ee_standin.server import AEF_COLLECTION, Fault, StandinServer

__all__ = ["AEF_COLLECTION", "Fault", "StandinServer"]
