"""Checks on every request before any route runs (an ASGI middleware).

- a NUL character in the path or in a query parameter (name or value): 400 naming the
  parameter (or ``path``) — PostgreSQL cannot compare text with NUL in it, so such a request
  would otherwise fail deep in a query;
- a state-changing request (not GET/HEAD/OPTIONS) that a browser sent from another origin: 403
  naming ``Origin``. ``Sec-Fetch-Site`` decides where the browser sent it (``same-origin``, or
  ``none`` for one the user made); else ``Origin`` must be this server's own. A request that
  carries the session cookie and neither header must carry the session's CSRF token
  (``csrf_token`` form field or ``X-CSRF-Token`` header). Requests authenticated by a header
  (an API key or a Bearer token) are exempt: a page on another origin cannot add those headers
  (this server answers no CORS preflight), and the ``Bearer`` scheme is never sent ambiently;
- a request body larger than ``Settings.max_body_bytes``: 413 naming ``body`` (a
  ``Content-Length`` over the limit is refused before reading; otherwise counted as it streams
  in). Ingest also bounds its body after decompression (``predwatch.server.ingest.read_body``);
- a JSON body nested deeper than ``MAX_JSON_DEPTH`` levels: 400 naming the field path where it
  goes too deep (a gzip body is checked by ingest once inflated). Deep values would pass a parser
  with a higher limit and then fail every later read of the row that holds them.

Errors have the app's shape: JSON ``{error, message, detail: {field}}`` under ``/api``, an error
page elsewhere.
"""

from __future__ import annotations

import hmac
import json
import re
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predwatch.server.auth import CSRF_FIELD, CSRF_HEADER, csrf_token, session_cookie_name
from predwatch.server.errors import error_response

MAX_JSON_DEPTH = 64
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_INLINE_BYTES = 256 * 1024  # larger bodies are checked off the event loop (~1 ms a MB, more
# when brackets inside strings must be discounted)


class BodyTooLarge(Exception):
    """Raised while reading a body once it passes the limit; answered 413 by the guard."""


class RequestGuard:
    """Refuse NUL characters in the path or query, cross-origin state changes, bodies over
    ``limit`` bytes and JSON bodies nested deeper than ``max_depth``."""

    def __init__(self, app: ASGIApp, limit: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.limit = limit
        self.max_depth = max_depth

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
        headers = _headers(scope)
        unsafe = scope["method"] not in SAFE_METHODS and not _header_authenticated(headers)
        refusal = cross_origin(scope, headers) if unsafe else None
        if refusal is not None:
            await self._forbid(scope, send, refusal, "Origin")
            return
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, send)
            return
        try:
            body = await self._read(receive)
        except BodyTooLarge:
            await self._too_large(scope, send)
            return
        if body is None:  # the client went away before sending its body
            return
        if unsafe and not _same_origin_evidence(scope, headers):
            session = _session_cookie(scope, headers)
            if session is not None and not _has_csrf_token(session, headers, body):
                await self._forbid(scope, send, (
                    "this request carries a session cookie but neither Sec-Fetch-Site nor Origin "
                    f"says it comes from this server; send the session's {CSRF_FIELD} "
                    f"(form field) or {CSRF_HEADER} (header), or use an API key header"),
                    CSRF_FIELD)
                return
        if _is_json_candidate(headers, body):
            path = (json_depth_violation(body, self.max_depth) if len(body) < _INLINE_BYTES
                    else await run_in_threadpool(json_depth_violation, body, self.max_depth))
            if path is not None:
                await self._refuse(scope, send, 400, {
                    "error": "bad_request", "message": depth_message(path, self.max_depth),
                    "detail": {"field": path, "limit": self.max_depth}})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect (streams use it)

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body; None when the client went away, ``BodyTooLarge`` past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _forbid(self, scope: Scope, send: Send, reason: str, field: str) -> None:
        await self._refuse(scope, send, 403, {
            "error": "forbidden", "message": f"cross-origin request refused: {reason}",
            "detail": {"field": field}})

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


# --- same-origin checks -------------------------------------------------------------------------
def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _header_authenticated(headers: dict[str, str]) -> bool:
    """An API key or Bearer header: only code that is not a cross-origin page can send one."""
    if headers.get("x-api-key") or headers.get("x-workspace-api-key"):
        return True
    return headers.get("authorization", "")[:7].lower() == "bearer "


def cross_origin(scope: Scope, headers: dict[str, str]) -> str | None:
    """Why a browser sent this request from another origin, or None when it did not (or it is
    not a browser: such clients send neither header)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is not None and not _is_own_origin(origin, headers):
        return f"Origin {origin[:200]!r} is not this server"
    return None


def _same_origin_evidence(scope: Scope, headers: dict[str, str]) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is not None and _is_own_origin(origin, headers)


def _is_own_origin(origin: str, headers: dict[str, str]) -> bool:
    """``Origin`` names the host (and port) this request was sent to. The scheme is not
    compared: behind a TLS proxy the server itself sees plain HTTP."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) or garbage
    return _netloc(parts.netloc) == _netloc(headers.get("host", ""))


def _netloc(value: str) -> str:
    value = value.strip().lower()
    for default in (":80", ":443"):
        if value.endswith(default):
            return value[: -len(default)]
    return value


def _session_cookie(scope: Scope, headers: dict[str, str]) -> str | None:
    name = session_cookie_name(headers.get("host"), scope.get("scheme", "http"))
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def _has_csrf_token(session: str, headers: dict[str, str], body: bytes) -> bool:
    sent = headers.get(CSRF_HEADER)
    if sent is None and headers.get("content-type", "").startswith(_FORM_TYPES[0]):
        form = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        sent = next((v for k, v in form if k == CSRF_FIELD), None)
    return sent is not None and hmac.compare_digest(sent.strip(), csrf_token(session))


# --- JSON nesting depth -------------------------------------------------------------------------
# Bytes -> +1 for an opening bracket, -1 (as a signed byte) for a closing one, 0 otherwise: the
# running sum is the nesting depth, computed in C (translate, memoryview, accumulate).
_OPENERS, _CLOSERS = b"{[", b"}]"
_NOT_BRACKETS = bytes(c for c in range(256) if c not in _OPENERS + _CLOSERS)
_STEPS = bytes(1 if c in _OPENERS else 255 if c in _CLOSERS else 0 for c in range(256))
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)


def _bracket_depth(raw: bytes) -> int:
    steps = raw.translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def json_depth_violation(raw: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The field path (``config.a.b``, ``predictions[3].messages``) of the first value nested
    deeper than ``limit`` levels in a JSON document, or None. Counting every bracket is a
    cheap upper bound (~1 ms/MB); only past the limit are brackets inside strings discounted,
    and only past it again is the path worked out."""
    if _bracket_depth(raw) <= limit or _bracket_depth(_STRING.sub(b"", raw)) <= limit:
        return None
    stack: list[list[Any]] = []  # [opener, current key or index]
    expect_key = False
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"{", b"["):
            stack.append([token, None if token == b"{" else 0])
            expect_key = token == b"{"
            if len(stack) > limit:
                return _path(stack[:-1])
        elif token in (b"}", b"]"):
            if stack:
                stack.pop()
            expect_key = False
        elif token == b",":
            if stack and stack[-1][0] == b"[":
                stack[-1][1] += 1
            expect_key = bool(stack) and stack[-1][0] == b"{"
        elif expect_key:
            stack[-1][1] = _key(token)
            expect_key = False
    return _path(stack)  # unbalanced: not JSON anyway; the parser will say so


def _key(token: bytes) -> str:
    try:
        key = str(json.loads(token))
    except ValueError:
        key = token[1:-1].decode("utf-8", "replace")
    return key if len(key) <= 40 else key[:40] + "…"


def _path(stack: list[list[Any]]) -> str:
    path = ""
    for opener, at in stack:
        if opener == b"[":
            path += f"[{at}]"
        elif at is not None:
            path += f".{at}" if path else str(at)
    return path or "body"


def depth_message(path: str, limit: int = MAX_JSON_DEPTH) -> str:
    """The refusal of a body nested too deep (the guard's and ingest's)."""
    return f"invalid {path}: JSON nested deeper than {limit} levels"


def _is_json_candidate(headers: dict[str, str], body: bytes) -> bool:
    """Bodies a JSON parser may read: not forms, not compressed (ingest checks those once
    inflated), starting with a bracket."""
    if headers.get("content-type", "").startswith(_FORM_TYPES):
        return False
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        return False
    return body.lstrip()[:1] in (b"{", b"[")

