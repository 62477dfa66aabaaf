"""The embedded demo: a small deterministic AEF-format mirror and a config that exercises the whole pipeline.

The mirror straddles the UTM 32N/33N border at 12°E (so one region crosses zones) and holds three years with
planted changes of known size: new construction (2020), a forest fire (2024) and a closed airfield (2024,
across the zone border), plus a nodata hole in 2017.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from generator.synthetic import Hole, MirrorSpec, Plant, build_mirror

DEMO_SPEC = MirrorSpec(
    bounds=(11.93, 52.36, 12.07, 52.44),
    years=(2017, 2020, 2024),
    tile_size=256,
    plants=(
        Plant(box(12.02, 52.39, 12.04, 52.40), year=2020, change=0.5),  # construction
        Plant(box(11.95, 52.375, 11.975, 52.39), year=2024, change=0.75),  # forest fire
        Plant(box(11.99, 52.415, 12.01, 52.425), year=2024, change=0.25),  # airfield, across 12°E
    ),
    holes=(Hole(box(12.045, 52.42, 12.055, 52.428), year=2017),),
    texture=True,
    seed=2017,
)

FOREST = box(11.945, 52.37, 11.985, 52.395)
AIRFIELD = box(11.985, 52.41, 12.015, 52.43)
DEMO_TOWN = box(11.94, 52.37, 12.06, 52.43)


def _geojson(geom: BaseGeometry) -> dict:
    """Plain-list GeoJSON (shapely gives tuples, which YAML's safe dumper refuses)."""
    return json.loads(json.dumps(mapping(geom)))


def demo_config(mirror_root: Path, catalog_dir: Path) -> dict:
    """The demo's regions config (as YAML data): three regions, two pairs, two methods."""
    return {
        "catalog": {
            "id": "changecat-demo",
            "title": "changecat demo: synthetic embedding change",
            "description": "Change maps computed by changecat from a small synthetic AEF-format mirror.",
            "output": str(catalog_dir),
        },
        "source": {"kind": "aef", "root": str(mirror_root)},
        "pairs": [[2017, 2024], [2020, 2024]],
        "methods": ["cosine", "angle"],
        "regions": [
            {
                "id": "demo-town",
                "title": "Demo town (across UTM 32N/33N)",
                "bbox": [11.94, 52.37, 12.06, 52.43],
            },
            {"id": "forest", "title": "Forest with a 2024 fire", "geometry": _geojson(FOREST)},
            {"id": "airfield", "title": "Closed airfield", "file": "aoi/airfield.geojson"},
        ],
    }


def prepare_demo(out: Path) -> Path:
    """Build (or reuse) the demo mirror and config under ``out``; return the config path.

    The mirror is rebuilt only when its spec changed, so repeated runs reuse it.
    """
    demo = out / "demo"
    mirror = demo / "aef"
    stamp = mirror / "spec.sha256"
    digest = hashlib.sha256(repr(DEMO_SPEC).encode()).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == digest and (mirror / "aef_index.parquet").is_file()):
        build_mirror(mirror, DEMO_SPEC)
        stamp.write_text(digest)
    aoi = demo / "aoi" / "airfield.geojson"
    aoi.parent.mkdir(parents=True, exist_ok=True)
    aoi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": _geojson(AIRFIELD)}))
    config_path = demo / "regions.yaml"
    config = demo_config(Path("aef"), Path("..") / "catalog")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path
