"""Shared test fixtures: where the official STAC extension schemas are, for offline validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# google-auth looks for credentials on the GCE metadata server (a link-local address, not loopback) when it
# finds none on disk; tests talk only to 127.0.0.1, so that probe is switched off for the whole session.
os.environ["NO_GCE_CHECK"] = "True"

STAC_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "stac-schemas"
"""Copies of the extension schemas, beside the repository (CI lays shared/ there too)."""


@pytest.fixture(scope="session")
def stac_schemas() -> Path:
    if not (STAC_SCHEMAS / "projection").is_dir():
        pytest.fail(f"offline STAC extension schemas not found at {STAC_SCHEMAS}")
    return STAC_SCHEMAS


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog made once per session by the real pipeline (read-only for the tests using it)."""
    from tests.publish_helpers import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"))
