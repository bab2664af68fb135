"""The OpenAPI document, finished so that it tells the truth.

FastAPI documents each route's 200 from its ``response_model`` (routes return those models) and
its request parameters. It cannot know what the app answers around the routes, so this module
adds it to every ``/api`` operation, checked against a live server by schemathesis
(``tests/server/test_openapi_live.py``):

- errors in the one shape ``ErrorBody``: 400 (a bad parameter or body: the app answers 400, never
  FastAPI's 422 ``HTTPValidationError``; also a NUL character anywhere in the path or query),
  401 (missing, unknown or revoked credential) on routes that authenticate (and 403 on ingest:
  rows naming another run than the token's), 404 on routes that
  name a resource in their path, 413 on routes with a body, 503 (database unavailable, with
  ``Retry-After``) on routes that read the store; routes declare the rest themselves
  (``ERRORS``: 403, 409, 422 where they can happen);
- the credentials: ``X-API-Key`` or ``Authorization: Bearer`` (a key or a run write token);
- the ingest body (``IngestBody``), which its route reads itself (to bound and un-gzip it).

A method a path does not have answers 405 with an ``Allow`` header listing the ones it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from predwatch.server.auth import reader, run_writer
from predwatch.server.schemas import ErrorBody, IngestBody

DESCRIPTION = """\
Every error answers `{error, message, detail}` (`ErrorBody`); `detail.field` names the bad field.
A method a path does not have answers 405 with an `Allow` header listing the ones it has.
Credentials: `X-API-Key: <key>` or `Authorization: Bearer <key or run write token>`; a key sees
only its user's runs (any other run answers 404, exactly like one that does not exist).
"""

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_REASONS = {
    400: "Bad request: the field named in `detail.field` (a parameter, the body, a NUL character)",
    401: "Missing, unknown or revoked API key or run token",
    403: "The credential does not cover this (a run token creating a run, or writing rows "
         "of another run)",
    404: "Not found, or not visible to the caller (never a hint that it exists)",
    409: "Conflicts with the caller's own resource",
    413: "Request body (or one of its texts) over the server's limit",
    422: "The body is well-formed but describes something invalid (config, items)",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}


def error(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error statuses (the rest are added app-wide)."""
    return {code: {"model": ErrorBody, "description": _REASONS[code]} for code in codes}


def install(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Replace ``app.openapi`` with one that finishes FastAPI's document (built once);
    ``routes``: the API's routes (to tell which authenticate)."""
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _add_components(schema)
            auth = {route.path_format: route for route in routes
                    if isinstance(route, APIRoute) and _authenticates(route)}
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/api"):
                    for operation in operations.values():
                        _finish(path, operation, auth.get(path))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def _add_components(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    for model in (IngestBody, ErrorBody):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            models.setdefault(name, definition)
        models[model.__name__] = body
    for unused in ("HTTPValidationError", "ValidationError"):
        models.pop(unused, None)  # the app answers 400 ErrorBody, never FastAPI's 422 shape
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "a read API key (pwk_...)"},
        "Bearer": {"type": "http", "scheme": "bearer",
                   "description": "an API key (pwk_...) or a run write token (pwr_...)"},
    }
    components.setdefault("headers", {})["Retry-After"] = {
        "description": "seconds to wait before retrying", "schema": {"type": "string"}}


def _authenticates(route: APIRoute) -> str | None:
    """``"reader"`` or ``"writer"`` when a route checks a credential, else None."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is reader:
            return "reader"
        if dependant.call is run_writer:
            return "writer"
        pending += dependant.dependencies
    return None


def _finish(path: str, operation: dict[str, Any], route: APIRoute | None) -> None:
    responses = operation.setdefault("responses", {})
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if fastapi_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]
    codes = [400]
    kind = _authenticates(route) if route is not None else None
    if kind is not None:
        codes += [401, 503] + ([403] if kind == "writer" else [])
        operation["security"] = ([{"Bearer": []}] if kind == "writer"
                                 else [{}, {"ApiKey": []}, {"Bearer": []}])
    if "{" in path:
        codes.append(404)
    if "requestBody" in operation:
        codes.append(413)
    for code in codes:
        entry = responses.setdefault(str(code), {"description": _REASONS[code]})
        entry.setdefault("content", {"application/json": {"schema": _ERROR_REF}})
        if code == 503:
            entry.setdefault("headers", {"Retry-After": {
                "$ref": "#/components/headers/Retry-After"}})
