#!/usr/bin/env bash
# Vendor the charting library (uPlot, MIT) into the package so the UI works offline.
#
# Run once when the pinned version changes, then commit src/predwatch/server/pages/static/vendor/.
# CI and users never need npm: the files ship inside the package.
set -euo pipefail

UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/src/predwatch/server/pages/static/vendor/uplot"
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

# Swagger UI (Apache-2.0) for the OpenAPI docs at /docs, which must work offline too.
SWAGGER_VERSION="${SWAGGER_VERSION:-5.35.0}"
SDEST="$ROOT/src/predwatch/server/pages/static/vendor/swagger-ui"
cd "$WORK"
npm pack --silent "swagger-ui-dist@${SWAGGER_VERSION}" >/dev/null
mkdir -p swagger && tar -xzf "swagger-ui-dist-${SWAGGER_VERSION}.tgz" -C swagger
rm -rf "$SDEST"
mkdir -p "$SDEST"
cp swagger/package/swagger-ui-bundle.js swagger/package/swagger-ui.css "$SDEST/"
cp swagger/package/LICENSE "$SDEST/LICENSE"
SSHA="$(sha256sum "swagger-ui-dist-${SWAGGER_VERSION}.tgz" | cut -d' ' -f1)"
cat > "$SDEST/VERSION" <<INFO
swagger-ui-dist ${SWAGGER_VERSION} (Apache-2.0, see LICENSE)
source: npm pack swagger-ui-dist@${SWAGGER_VERSION}
tarball sha256: ${SSHA}
files: swagger-ui-bundle.js, swagger-ui.css
INFO
echo "vendored swagger-ui-dist ${SWAGGER_VERSION} into ${SDEST#"$ROOT"/}"
