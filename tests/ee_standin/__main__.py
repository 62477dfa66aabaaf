"""Serve an AEF-format mirror as an Earth Engine stand-in: ``python -m tests.ee_standin --mirror DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.ee_standin.server import AEF_COLLECTION, FAULT_KINDS, Fault, StandinServer


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.ee_standin", description=__doc__)
    p.add_argument("--mirror", type=Path, required=True, help="folder holding aef_index.parquet")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--collection", default=AEF_COLLECTION)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN'")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:COUNT",
        help=f"inject faults into computePixels; KIND in {', '.join(FAULT_KINDS)}",
    )
    args = p.parse_args()
    faults = [Fault(k, int(c or 1)) for k, _, c in (f.partition(":") for f in args.fault)]
    server = StandinServer(args.mirror, args.collection, args.port, faults=faults, token=args.token)
    print(f"Earth Engine stand-in for {args.mirror} at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
