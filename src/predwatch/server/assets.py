"""Static files of the web UI, served from the installed package with a content hash in the URL.

``asset_url("app.js")`` gives ``/static/<sha256[:12]>/app.js``. Because the hash changes with the
file, the response may be cached forever (``immutable``); an old hash (a page rendered before an
upgrade) still gets the current file, uncached. JavaScript modules import each other by bare
names (``import { drawCharts } from "predwatch/charts.js"``) through an import map that
``import_map()`` builds, so every module URL carries its own hash too. Nothing is fetched from
a CDN: the UI works offline.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from predwatch.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "pages" / "static"
PREFIX = "/static"
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

router = APIRouter()


@cache
def _manifest() -> dict[str, str]:
    """``{relative path: content hash}`` of every static file (read once per process)."""
    found = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            found[path.relative_to(STATIC_DIR).as_posix()] = digest
    return found


def asset_url(name: str) -> str:
    """The URL of a static file, with its content hash (``KeyError`` for an unknown file)."""
    return f"{PREFIX}/{_manifest()[name]}/{name}"


def import_map() -> dict[str, Any]:
    """An import map naming every JavaScript module by a bare specifier.

    ``predwatch/<file>.js`` for our modules, ``uplot`` for the charting library.
    """
    imports = {
        f"predwatch/{name}": asset_url(name)
        for name in _manifest()
        if name.endswith(".js") and "/" not in name
    }
    imports["uplot"] = asset_url("vendor/uplot/uPlot.esm.js")
    return {"imports": imports}


@router.get(PREFIX + "/{digest}/{name:path}", include_in_schema=False)
def static_file(digest: str, name: str) -> Response:
    """One static file; cached forever when ``digest`` is its current hash."""
    current = _manifest().get(name)
    if current is None:  # only files in the manifest: no path traversal
        raise NotFound(f"no static file {name!r}")
    body = (STATIC_DIR / name).read_bytes()
    media = _TYPES.get(Path(name).suffix) or mimetypes.guess_type(name)[0] or "text/plain"
    cache = IMMUTABLE if digest == current else "no-cache"
    return Response(body, media_type=media, headers={"Cache-Control": cache})
