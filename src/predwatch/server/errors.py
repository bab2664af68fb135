"""Errors in the app's one shape, and the exception handlers that produce it.

Every error is ``{error, message, detail}``: JSON under ``/api`` (and for ``/docs``,
``/openapi.json``), an HTML error page everywhere else. An unexpected exception is logged with
its traceback and answered 500 without internals. ``guards`` (the ASGI middleware) and the
handlers below both answer through ``error_response``, so nothing here imports the app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from predwatch.errors import PredwatchError, StorageUnavailable
from predwatch.server.responses import JSON

log = logging.getLogger(__name__)

STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests"}
RETRY_AFTER_SECONDS = "2"

ErrorPage = Callable[[Request, int, str], Response]


def error_response(request: Request, status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> Response:
    """An error in the app's shape: JSON under ``/api``, an error page elsewhere."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/") or path in ("/docs", "/openapi.json"):
        return JSON(body, status_code=status, headers=headers)
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    if page is not None:
        try:
            response = page(request, status, str(body.get("message", "")))
        except Exception:  # an error page must never hide the error it reports
            log.exception("error page for %s failed", path)
        else:
            response.headers.update(headers or {})
            return response
    return PlainTextResponse(f"{status} {body.get('message', '')}", status_code=status,
                             headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """One handler per kind of error, each answering through ``error_response``."""

    @app.exception_handler(PredwatchError)
    async def predwatch_error(request: Request, exc: PredwatchError) -> Response:
        if isinstance(exc, StorageUnavailable):
            return _unavailable(request, exc.message)
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(request, exc.status_code, exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"field": "body" if e["type"] == "json_invalid" else _param_path(e["loc"]),
                     "reason": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"field": "request", "reason": "invalid"}
        body = {"error": "bad_request",
                "message": f"invalid {first['field']}: {first['reason']}",
                "detail": {"field": first["field"], "problems": problems}}
        return error_response(request, 400, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "error")
        body = {"error": code, "message": str(exc.detail)}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists only the first route matching the path
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(request, exc.status_code, body, headers=headers or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        body = {"error": "internal_error", "message": "internal server error (logged)"}
        return error_response(request, 500, body)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this request's path (for a 405's ``Allow``)."""
    scope = {**request.scope, "method": ""}  # no method matches fully: every path match is partial
    methods: set[str] = set()
    for route in getattr(request.app.state, "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _unavailable(request: Request, reason: str) -> Response:
    # The database is down, restarting or locked past the busy timeout: a transient state that
    # clients (and the HTTP sink) should retry, not a bug.
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, reason)
    body = {"error": StorageUnavailable.code, "message": "the database is unavailable; retry"}
    return error_response(request, 503, body, headers={"Retry-After": RETRY_AFTER_SECONDS})


def field_path(loc: tuple[Any, ...]) -> str:
    """A validation error's location as a field path: ``predictions[0].prompt``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _param_path(loc: Any) -> str:
    """``('query', 'limit')`` -> ``limit``; body locations keep their path."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        return ".".join(str(p) for p in parts[1:]) or str(parts[0])
    if parts and parts[0] == "body":
        parts = parts[1:]
    return field_path(tuple(parts))
