#!/usr/bin/env bash
# Vendor the charting library (uPlot, MIT) into the package so the UI works offline.
#
# Run once when the pinned version changes, then commit src/predwatch/server/static/vendor/.
# CI and users never need npm: the files ship inside the package.
set -euo pipefail

UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/src/predwatch/server/static/vendor/uplot"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null
tar -xzf "uplot-${UPLOT_VERSION}.tgz"

rm -rf "$DEST"
mkdir -p "$DEST"
cp package/dist/uPlot.esm.js "$DEST/uPlot.esm.js"
cp package/dist/uPlot.min.css "$DEST/uPlot.min.css"
cp package/LICENSE "$DEST/LICENSE"
SHA="$(sha256sum "uplot-${UPLOT_VERSION}.tgz" | cut -d' ' -f1)"
cat > "$DEST/VERSION" <<INFO
uplot ${UPLOT_VERSION} (MIT, see LICENSE)
source: npm pack uplot@${UPLOT_VERSION}
tarball sha256: ${SHA}
files: dist/uPlot.esm.js, dist/uPlot.min.css
INFO
echo "vendored uPlot ${UPLOT_VERSION} into ${DEST#"$ROOT"/}"
