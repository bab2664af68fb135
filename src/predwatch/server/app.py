"""``create_app(store, settings)``: the FastAPI application over a store.

The JSON API lives under ``/api`` (``api_runs``, ``api_predictions``, ``api_analysis``), the HTML
pages (``predwatch.server.pages.site``, when installed) everywhere else. One exception handler turns
every error into a JSON body ``{error, message, detail}`` for ``/api`` and an error page for the
rest; an unexpected exception is logged with its traceback and answered 500 without internals.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from predwatch import __version__
from predwatch.config import Settings
from predwatch.errors import PredwatchError
from predwatch.server.guards import RequestGuard
from predwatch.server.ingest import field_path
from predwatch.server.responses import JSON
from predwatch.storage.base import Store

log = logging.getLogger(__name__)

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests"}


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """The predwatch server over ``store``.

    Args:
        store: an open store; the caller owns it (closes it after the app stops).
        settings: limits, auth and stream settings (default: ``Settings.from_env()``).
    """
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="predwatch",
        version=__version__,
        summary="What a language model answers while it is fine-tuned.",
        default_response_class=JSON,
        docs_url=None,  # served below from vendored Swagger UI assets: no CDN, works offline
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.poll_seconds = min(0.5, settings.heartbeat_seconds)

    from predwatch.server.api import analysis as api_analysis
    from predwatch.server.api import predictions as api_predictions
    from predwatch.server.api import runs as api_runs
    from predwatch.server.api import sets as api_sets

    app.include_router(api_runs.router)
    app.include_router(api_predictions.router)
    app.include_router(api_analysis.router)
    app.include_router(api_sets.router)  # prediction sets and cost estimates
    app.include_router(importlib.import_module("predwatch.server.api.jobs").router)
    pages = _pages_module()
    if pages is not None:
        app.include_router(pages.router)
        install = getattr(pages, "install", None)
        if install is not None:  # e.g. template globals, extra mounts
            install(app)
    app.state.pages = pages
    _install_error_handlers(app)
    # NUL characters in the path or query (400) and bodies over the limit (413), app-wide.
    app.add_middleware(RequestGuard, limit=settings.max_body_bytes)
    _document_ingest_body(app)
    _install_docs(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """OpenAPI docs at ``/docs`` with Swagger UI served by predwatch itself (vendored from npm)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    from predwatch.server import assets

    if not any(getattr(r, "path", None) == assets.PREFIX + "/{digest}/{name:path}"
               for r in app.routes):
        app.include_router(assets.router)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="predwatch API",
            swagger_js_url=assets.asset_url("vendor/swagger-ui/swagger-ui-bundle.js"),
            swagger_css_url=assets.asset_url("vendor/swagger-ui/swagger-ui.css"),
            swagger_favicon_url=assets.asset_url("favicon.svg"),
        )


def _document_ingest_body(app: FastAPI) -> None:
    """Put ``IngestBody`` in the OpenAPI components: the ingest route reads its body itself
    (to bound its size while streaming and to accept gzip), so FastAPI cannot see the model."""
    from predwatch.server.schemas import IngestBody

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            body = IngestBody.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in body.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["IngestBody"] = body
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _pages_module() -> ModuleType | None:
    """The HTML pages, when they import; the JSON API is served either way."""
    try:
        return importlib.import_module("predwatch.server.pages.site")
    except ModuleNotFoundError as exc:
        if exc.name in ("predwatch.server.pages.site", "jinja2"):
            return None  # not installed (the [server] extra without the UI)
        log.exception("predwatch: the web UI failed to import; serving the JSON API only")
    except ImportError:
        log.exception("predwatch: the web UI failed to import; serving the JSON API only")
    return None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PredwatchError)
    async def predwatch_error(request: Request, exc: PredwatchError) -> Response:
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _error(request, exc.status_code, exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"field": "body" if e["type"] == "json_invalid" else _param_path(e["loc"]),
                     "reason": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"field": "request", "reason": "invalid"}
        body = {"error": "bad_request",
                "message": f"invalid {first['field']}: {first['reason']}",
                "detail": {"field": first["field"], "problems": problems}}
        return _error(request, 400, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        body = {"error": code, "message": str(exc.detail)}
        return _error(request, exc.status_code, body, headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> Response:
        # The database is down, restarting or locked past the busy timeout: a transient state
        # that clients (and the HTTP sink) should retry, not a bug.
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path,
                    str(exc.orig or exc).splitlines()[0])
        body = {"error": "database_unavailable", "message": "the database is unavailable; retry"}
        return _error(request, 503, body, headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        body = {"error": "internal_error", "message": "internal server error (logged)"}
        return _error(request, 500, body)


def _param_path(loc: Any) -> str:
    """``('query', 'limit')`` -> ``limit``; body locations keep their path."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        return ".".join(str(p) for p in parts[1:]) or str(parts[0])
    if parts and parts[0] == "body":
        parts = parts[1:]
    return field_path(tuple(parts))


def error_response(request: Request, status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> Response:
    """An error in the app's shape: JSON under ``/api``, an error page elsewhere."""
    return _error(request, status, body, headers)


def _error(request: Request, status: int, body: dict[str, Any],
           headers: dict[str, str] | None = None) -> Response:
    path = request.url.path
    if path == "/api" or path.startswith("/api/") or path in ("/docs", "/openapi.json"):
        return JSON(body, status_code=status, headers=headers)
    pages = getattr(request.app.state, "pages", None)
    page = getattr(pages, "error_page", None)
    if page is not None:
        try:
            return page(request, status, body.get("message", ""))
        except Exception:
            log.exception("error page for %s failed", path)
    return PlainTextResponse(f"{status} {body.get('message', '')}", status_code=status,
                             headers=headers)
