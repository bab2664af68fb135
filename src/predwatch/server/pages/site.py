"""The web UI: server-rendered HTML pages over the same query functions as the JSON API.

``router`` holds every page and the static files; ``create_app`` includes it. ``error_page``
renders an HTML error for requests outside ``/api``. Pages work without JavaScript; scripts add
the charts (uPlot, vendored) and live updates (the run's server-sent event stream).

Pages:
  ``/``                               runs (search, paging)
  ``/runs/{run_id}``                  a run's monitor (trends, points, predictions, worst samples)
  ``/runs/{run_id}/prompts/{prompt}`` one prompt across the run, answers diffed
  ``/compare``                        two evaluation points of a run, or two runs
  ``/sets`` ...                       prediction sets
  ``/config``                         the predictions-config builder
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from predwatch.errors import AuthError
from predwatch.server import assets
from predwatch.server.pages import compare as pages_compare
from predwatch.server.pages import config as pages_config
from predwatch.server.pages import export as pages_export
from predwatch.server.pages import runs as pages_runs
from predwatch.server.pages import sets as pages_sets
from predwatch.server.pages import ui
from predwatch.server.pages.ui import render

router = APIRouter()
ROUTERS = (assets.router, pages_export.router, pages_runs.router, pages_compare.router,
           pages_config.router, pages_sets.router, router)
"""Every router of the pages (``router`` includes the others), for ``app.state.routes``."""
for _child in ROUTERS[:-1]:
    router.include_router(_child)
ui.ENV.globals["has_sets"] = True

_TITLES = {400: "Bad request", 401: "Not signed in", 403: "Forbidden", 404: "Not found",
           409: "Conflict", 413: "Too large", 422: "Invalid input", 500: "Server error",
           503: "Unavailable"}


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """An HTML error page (the app's handler uses it for every error outside ``/api``).

    A 401 page carries the sign-in form: a browser cannot send an API key header, so it signs
    in with the key once and gets a session cookie (``predwatch.server.auth``)."""
    title = _TITLES.get(status_code, "Error")
    return render(request, "error.html", status=status_code, status_code=status_code, title=title,
                  message=message, next_url=_safe_next(request.url.path))


def _safe_next(target: str) -> str:
    """Only a path on this server (never ``//host`` or a scheme) is a place to go back to."""
    if not target.startswith("/") or target.startswith("//") or target == "/login":
        return "/"
    return target


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Sign in a browser: check the API key, then start a server-side session whose random id
    (never the key) goes into this server's ``HttpOnly; SameSite=Strict`` cookie."""
    from predwatch.server import auth

    form = await request.form()
    key = str(form.get("key") or "").strip()
    target = _safe_next(str(form.get("next") or "/"))
    if not key:
        raise AuthError("enter an API key", detail={"field": "key"})
    store = request.app.state.store
    name = _cookie_name(request)
    auth.end_session(store, request.cookies.get(name))  # signing in again replaces a session
    session, _user = auth.start_session(store, key)  # AuthError (401 page) when unknown
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(name, session, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=auth.SESSION_SECONDS)
    response.delete_cookie(auth.LEGACY_KEY_COOKIE, path="/")
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    """Sign out: the session ends server-side and the cookie is cleared."""
    from predwatch.server import auth

    name = _cookie_name(request)
    auth.end_session(request.app.state.store, request.cookies.get(name))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(name, path="/", httponly=True, samesite="strict")
    response.delete_cookie(auth.LEGACY_KEY_COOKIE, path="/")
    return response


def _cookie_name(request: Request) -> str:
    from predwatch.server.auth import session_cookie_name

    return session_cookie_name(request.headers.get("host"), request.url.scheme)
