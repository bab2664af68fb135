"""The one HTTP client of predwatch's own API (delivery, the CLI's ``--server``, set fetching).

It settles, once:

- **auth**: a run write token goes as ``Authorization: Bearer``; a read API key as
  ``X-API-Key``. Each request says which it needs (``auth="token" | "key" | "any"``).
- **errors**: an answer of 400/401/403/404/409/413/422 becomes the matching error of
  ``predwatch.errors`` carrying the server's message (``.detail["status"]`` keeps the code);
  a redirect is a ``ConfigError`` (the URL is not where the API answers). Connection errors,
  timeouts, 408, 429 and 5xx are retried and end as ``ServerUnavailable``.
- **backoff**: jittered exponential, ``Retry-After`` honoured (seconds or an HTTP date).
- **deadlines**: a request never outlives its deadline (a stalled server cannot stall a close),
  and ``cancel()`` ends every retry at once.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from typing import Any, Literal

import httpx
from typing_extensions import Self

from predwatch.errors import (
    AuthError,
    ConfigError,
    Conflict,
    DataError,
    DeliveryError,
    Forbidden,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    PredwatchError,
)

log = logging.getLogger(__name__)

Auth = Literal["token", "key", "any", "none"]

_BY_STATUS: dict[int, type[PredwatchError]] = {
    400: PayloadError, 401: AuthError, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: DataError,
}
_KNOWN: tuple[type[PredwatchError], ...] = (*_BY_STATUS.values(), ConfigError)
_BY_CODE: dict[str, type[PredwatchError]] = {cls.code: cls for cls in _KNOWN}


class ServerUnavailable(DeliveryError):
    """The server could not be reached, or kept failing, until the deadline."""


class ApiClient:
    """Calls a predwatch server.

    Args:
        server_url: e.g. ``http://predwatch.internal:8000``.
        token: a run write token (``pwr_...``).
        api_key: a read API key (``pwk_...``).
        request_timeout: seconds one HTTP request may take.
        total_timeout: seconds one call may spend retrying (when no deadline is given).
        backoff_base, backoff_max: first and longest wait between retries (seconds).
        http: an ``httpx.Client`` to send through, with its own timeouts (tests pass an
            in-process one).
    """

    def __init__(self, server_url: str, *, token: str | None = None, api_key: str | None = None,
                 request_timeout: float = 30.0, total_timeout: float = 60.0,
                 backoff_base: float = 0.5, backoff_max: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        self.url = server_url.rstrip("/")
        self.token = token
        self.api_key = api_key
        self.request_timeout = request_timeout
        self.total_timeout = total_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._http = http or httpx.Client(base_url=self.url, timeout=request_timeout)
        self._own_timeouts = http is None  # a client passed in keeps its own timeouts
        self._cancelled = threading.Event()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def cancel(self) -> None:
        """End every retry now (their calls raise ``ServerUnavailable``)."""
        self._cancelled.set()

    # -- calls ---------------------------------------------------------------------------------
    def get(self, path: str, *, auth: Auth = "any", deadline: float | None = None,
            **params: Any) -> Any:
        """The JSON answer of ``GET path?params`` (``None`` parameters are left out)."""
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, auth=auth, deadline=deadline, params=query).json()

    def call(self, method: str, path: str, *, auth: Auth = "any", **kwargs: Any) -> Any:
        """The JSON answer of one request (see ``request``)."""
        return self.request(method, path, auth=auth, **kwargs).json()

    def request(self, method: str, path: str, *, auth: Auth = "any",
                deadline: float | None = None, retry: bool = True,
                headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors, timeouts, 408, 429 and 5xx until
        ``deadline`` (a ``time.monotonic()`` value; default ``total_timeout`` from now).

        Raises:
            ServerUnavailable: still failing at the deadline, or ``cancel()`` was called.
            PredwatchError: the server refused the request (the subclass matches the status).
        """
        end = deadline if deadline is not None else time.monotonic() + self.total_timeout
        sent = {**(headers or {}), **self._auth(auth)}
        attempt = 0
        while True:
            if self._cancelled.is_set():
                raise ServerUnavailable(f"{self.url}: cancelled (the client is closing)")
            if self._own_timeouts:  # no request outlives the deadline
                kwargs["timeout"] = max(0.05, min(self.request_timeout, end - time.monotonic()))
            try:
                response = self._http.request(method, path, headers=sent, **kwargs)
            except httpx.TransportError as exc:
                problem, wait = f"cannot reach it ({type(exc).__name__}: {exc})", self._backoff(
                    attempt)
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status < 400:  # never followed: the URL is not where the API answers
                    raise ConfigError(
                        f"{self.url}{path} redirected ({status}) to "
                        f"{response.headers.get('location', '?')}; set the server URL to where "
                        "the predwatch API answers", detail={"status": status})
                if status not in (408, 429) and status < 500:
                    raise refusal(response, self.url)
                problem = f"it answered {status}: {message(response)}"
                asked = retry_after(response)
                wait = self._backoff(attempt) if asked is None else asked
            attempt += 1
            if not retry or time.monotonic() + wait > end:
                raise ServerUnavailable(f"{method} {self.url}{path}: {problem}; gave up after "
                                        f"{attempt} attempt(s)")
            log.debug("predwatch: %s %s: %s; retrying in %.2fs", method, path, problem, wait)
            if self._cancelled.wait(wait):
                raise ServerUnavailable(f"{self.url}: cancelled (the client is closing)")

    def _auth(self, auth: Auth) -> dict[str, str]:
        key = self.api_key if auth in ("key", "any") else None
        token = self.token if auth in ("token", "any") else None
        if key:
            return {"X-API-Key": key}
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(attempt, 30))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def refusal(response: httpx.Response, url: str = "") -> PredwatchError:
    """The predwatch error a 4xx answer stands for, with the server's message."""
    status = response.status_code
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        code = None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    cls = cls or _BY_STATUS.get(status, PayloadError)
    where = url or str(response.request.url.copy_with(path="/", query=None)).rstrip("/")
    return cls(f"{where} answered {status}: {message(response)}", detail={"status": status})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a refusal raised by ``ApiClient`` carries (None for other errors)."""
    detail = getattr(exc, "detail", None)
    status = detail.get("status") if isinstance(detail, dict) else None
    return status if isinstance(status, int) else None


def message(response: httpx.Response) -> str:
    """The human-readable message of an error answer (its ``message``, else its text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:300]


def retry_after(response: httpx.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
