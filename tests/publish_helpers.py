"""Shared by the publish, search and serve tests: the demo catalog made by the real pipeline, an S3-protocol
server (moto) with a public-read bucket, and stac-check run with the offline schemas."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pystac
import pytest
from moto.server import ThreadedMotoServer
from stac_check.lint import Linter
from stac_validator.validate import StacValidate

from changecat.pipeline import run
from generator.config import load_config
from generator.demo import prepare_demo

NO_PROXY = "127.0.0.1,localhost"
CORE_SCHEMAS = Path(pystac.__file__).parent / "validation" / "jsonschemas"


def build_demo(out: Path) -> Path:
    """The demo catalog, made as `changecat demo` makes it; returns the catalog folder."""
    config = load_config(prepare_demo(out))
    outcomes = run(config)
    assert [o.status for o in outcomes] == ["done"] * len(outcomes)
    return config.catalog.output


def start_s3() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def use_s3(monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str) -> Any:
    """Standard AWS variables pointing at the local server; a bucket anyone may read (as a published
    catalog's bucket is); returns a boto3 client for the test's own checks."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, NO_PROXY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                # AWS authorizes HEAD with s3:GetObject (HeadObject API docs); moto's policy check asks
                # for an "s3:HeadObject" action on HEAD requests, so both are granted.
                "Action": ["s3:GetObject", "s3:HeadObject"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return s3


def http_get(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def multihash(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


def schema_map(stac_schemas: Path) -> dict[str, str]:
    """Schema URL → local copy: STAC core and GeoJSON (bundled with pystac) and the extensions."""
    out = {}
    for path in (CORE_SCHEMAS / "stac-spec" / "v1.1.0").glob("*.json"):
        for kind in ("item-spec", "catalog-spec", "collection-spec"):
            out[f"https://schemas.stacspec.org/v1.1.0/{kind}/json-schema/{path.name}"] = str(path)
    for path in (CORE_SCHEMAS / "geojson").glob("*.json"):
        out[f"https://geojson.org/schema/{path.name}"] = str(path)
    for path in stac_schemas.glob("*/*/schema.json"):
        out[f"https://stac-extensions.github.io/{path.relative_to(stac_schemas).as_posix()}"] = str(path)
    return out


def stac_check(url: str, stac_schemas: Path) -> tuple[bool, str, list[str]]:
    """stac-check's verdict on one object: (valid, error, best-practice warnings), schemas offline."""
    mapping = schema_map(stac_schemas)

    class OfflineLinter(Linter):
        def validate_file(self, file: str | dict) -> dict[str, Any]:
            stac = StacValidate(file, schema_map=mapping) if isinstance(file, str) else None
            assert stac is not None
            stac.run()
            return stac.message[0]

    lint = OfflineLinter(url)
    warnings = [m for m in lint.best_practices_msg[1:] if m.strip()]
    return lint.valid_stac, str(lint.message.get("error_message") or ""), warnings


def walk_urls(root_url: str) -> list[str]:
    """URLs of the root, its collections and their items, following the published links."""
    cat = pystac.Catalog.from_file(root_url)
    urls = [root_url]
    for coll in cat.get_children():
        urls.append(coll.get_self_href())
        urls += [item.get_self_href() for item in coll.get_items()]
    return urls
