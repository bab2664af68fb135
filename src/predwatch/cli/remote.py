"""A small client of the predwatch API for the CLI's ``--server`` options."""

from __future__ import annotations

from typing import Any

import click
import httpx
from typing_extensions import Self

from predwatch.config import Settings


class Remote:
    """Calls a predwatch server with an API key (``--api-key`` or ``PREDWATCH_API_KEY``);
    every error answer becomes a ``ClickException`` carrying the server's message."""

    def __init__(self, server_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 error: type[click.ClickException] = click.ClickException) -> None:
        key = api_key or Settings.from_env().api_key
        headers = {"X-API-Key": key} if key else {}
        self.url = server_url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._error = error

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except (ValueError, AttributeError):
                message = response.text[:300]
            raise self._error(f"{self.url} answered {response.status_code}: {message}")
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})
