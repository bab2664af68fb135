"""The web UI: server-rendered HTML pages over the same query functions as the JSON API.

``router`` holds every page and the static files; ``create_app`` includes it. ``error_page``
renders an HTML error for requests outside ``/api``. Pages work without JavaScript; scripts add
the charts (uPlot, vendored) and live updates (the run's server-sent event stream).

Pages:
  ``/``                               runs (search, paging)
  ``/runs/{run_id}``                  a run's monitor (trends, points, predictions, worst samples)
  ``/runs/{run_id}/prompts/{prompt}`` one prompt across the run, answers diffed
  ``/compare``                        two evaluation points of a run, or two runs
  ``/sets`` ...                       prediction sets (when ``predwatch.sets`` is installed)
  ``/config``                         the predictions-config builder
"""

from __future__ import annotations

import importlib.util

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from predwatch.server import assets, pages_compare, pages_config, pages_runs
from predwatch.server.ui import render

router = APIRouter()
router.include_router(assets.router)
router.include_router(pages_runs.router)
router.include_router(pages_compare.router)
router.include_router(pages_config.router)
if importlib.util.find_spec("predwatch.sets") is not None:
    from predwatch.server import pages_sets

    router.include_router(pages_sets.router)

_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found",
           409: "Conflict", 413: "Too large", 422: "Invalid input", 500: "Server error",
           503: "Unavailable"}


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """An HTML error page (the app's handler uses it for every error outside ``/api``)."""
    title = _TITLES.get(status_code, "Error")
    return render(request, "error.html", status_code=status_code, title=title, message=message)
