#!/usr/bin/env bash
# Build STAC Browser once into $1 (e.g. build/stac-browser) for tests/test_stac_browser.py, with Debian's
# Chromium and Node. Run by `make stac-browser` (part of `make test`). Never fails the make run: when a step
# cannot run, the reason goes to $1/SKIPPED and the browser test skips with it.
set -u
OUT="$1"
VERSION="$2"
OL_STAC="$3"
PINS="@radiantearth/stac-browser@$VERSION ol-stac@$OL_STAC"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/setup.log"
: > "$LOG"
skip() { echo "$1 (see $LOG)" > "$OUT/SKIPPED"; echo "stac-browser: skipped: $1"; exit 0; }
rm -f "$OUT/SKIPPED"

apt_install() {  # Debian packages, only when missing; needs root (CI and the dev machines run as root)
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || return 1
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } >>"$LOG" 2>&1
}

command -v chromium >/dev/null 2>&1 || apt_install chromium || skip "cannot install Debian's chromium"
command -v npm >/dev/null 2>&1 || apt_install nodejs npm || skip "cannot install Debian's nodejs and npm"

if [ "$(cat "$OUT/dist/.pins" 2>/dev/null)" != "$PINS" ]; then  # built once per set of pinned versions
  SRC="$OUT/src"
  rm -rf "$SRC" && mkdir -p "$SRC"
  # The npm package is the source: unpack it, install its dependencies, then run its build script.
  (cd "$SRC" && npm pack "@radiantearth/stac-browser@$VERSION" >>"$LOG" 2>&1 && tar xzf ./*.tgz) \
    || skip "cannot fetch @radiantearth/stac-browser@$VERSION from the npm registry"
  cd "$SRC/package" || skip "unexpected package layout"
  # ol-stac must use the stac-js that STAC Browser passes it: 4.0.x has stac-js 0.1.x, which ol-stac 1.1.0
  # expects (1.5.1 builds but wants stac-js 0.5: "getStatistics is not a function" when showing a COG).
  npm pkg set "dependencies.ol-stac=$OL_STAC" >>"$LOG" 2>&1
  npm install --no-audit --no-fund >>"$LOG" 2>&1 \
    || skip "npm install of STAC Browser's dependencies failed"
  NODE_OPTIONS=--max-old-space-size=4096 npm run build -- --historyMode=hash --pathPrefix=/ >>"$LOG" 2>&1 \
    || skip "STAC Browser's build script failed"
  rm -rf "$OUT/dist" && cp -r dist "$OUT/dist" || skip "no dist folder after the build"
  echo "$PINS" > "$OUT/dist/.pins"
fi
echo "stac-browser: $OUT/dist"
