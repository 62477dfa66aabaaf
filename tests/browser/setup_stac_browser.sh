#!/usr/bin/env bash
# Build STAC Browser once into $1 (e.g. build/stac-browser) for tests/test_stac_browser.py, with Debian's
# Chromium and Node. Run by `make stac-browser` (part of `make test`). Never fails the make run: when a step
# cannot run, the reason goes to $1/SKIPPED and the browser test skips with it.
set -u
OUT="$1"
VERSION="$2"
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

if [ ! -f "$OUT/dist/index.html" ]; then
  SRC="$OUT/src"
  rm -rf "$SRC" && mkdir -p "$SRC"
  # The npm package is the source: unpack it, install its dependencies, then run its build script.
  (cd "$SRC" && npm pack "@radiantearth/stac-browser@$VERSION" >>"$LOG" 2>&1 && tar xzf ./*.tgz) \
    || skip "cannot fetch @radiantearth/stac-browser@$VERSION from the npm registry"
  cd "$SRC/package" || skip "unexpected package layout"
  # ol-stac releases after 1.5.1 break this build (see DESIGN.md); ol-mapbox-style made explicit for it.
  npm pkg set "dependencies.ol-stac=1.5.1" >>"$LOG" 2>&1
  npm install --no-audit --no-fund >>"$LOG" 2>&1 \
    || skip "npm install of STAC Browser's dependencies failed"
  NODE_OPTIONS=--max-old-space-size=4096 npm run build -- --historyMode=hash --pathPrefix=/ >>"$LOG" 2>&1 \
    || skip "STAC Browser's build script failed"
  rm -rf "$OUT/dist" && cp -r dist "$OUT/dist" || skip "no dist folder after the build"
fi
echo "stac-browser: $OUT/dist"
