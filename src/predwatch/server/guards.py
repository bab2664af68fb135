"""Checks on every request before any route runs (an ASGI middleware).

- a NUL character in the path or in a query parameter (name or value): 400 naming the
  parameter (or ``path``) — PostgreSQL cannot compare text with NUL in it, so such a request
  would otherwise fail deep in a query;
- a request body larger than ``Settings.max_body_bytes``: 413 naming ``body``, counted as the
  body streams in (a ``Content-Length`` over the limit is refused before reading). Ingest also
  bounds its body after decompression (``predwatch.server.ingest.read_body``).

Errors have the app's shape: JSON ``{error, message, detail: {field}}`` under ``/api``, an error
page elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predwatch.server.errors import error_response


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes the limit; answered 413 by the guard."""


class RequestGuard:
    """Refuse NUL characters in the path or query, and bodies over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        field = nul_field(scope)
        if field is not None:
            await self._refuse(scope, send, 400, {
                "error": "bad_request", "detail": {"field": field},
                "message": f"invalid {field}: NUL characters are not allowed"})
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._too_large(scope, send)
            return
        state = {"read": 0, "over": False, "started": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.limit:
                    state["over"] = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # whatever the app makes of the cut body, the answer is 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(scope, send, 413, {
            "error": "payload_too_large", "message": f"request body exceeds {self.limit} bytes",
            "detail": {"field": "body", "limit": self.limit}})

    async def _refuse(self, scope: Scope, send: Send, status: int, body: dict[str, Any]) -> None:
        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        response = error_response(Request(scope, no_body), status, body)
        await response(scope, no_body, send)


def nul_field(scope: Scope) -> str | None:
    """The query parameter (or ``path``) holding a NUL character, if any."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "") or "query"
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            raw = value.strip()
            return int(raw) if raw.isdigit() else None
    return None
