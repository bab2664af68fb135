"""Options and formatting shared by the command modules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click
from typing_extensions import TypeIs

from predwatch.config import Settings
from predwatch.errors import PredwatchError

if TYPE_CHECKING:  # the database layer and the client are imported by the commands using them
    from predwatch.client import ApiClient
    from predwatch.storage.base import Store

CLI_TIMEOUT_S = 5.0  # a command retries an unreachable or overloaded server this long


def resolve_db_url(db: str | None) -> str:
    """A database URL from ``--db`` (a URL, or a SQLite file path), else the environment."""
    if db:
        return db if "://" in db else f"sqlite:///{db}"
    return Settings.from_env().database_url


_DB_HELP = "SQLite file or database URL [default: $PREDWATCH_DATABASE_URL or ./predwatch.db]"


def db_option(func: Callable[..., Any] | None = None, *, help: str = _DB_HELP) -> Any:
    """``--db``: a SQLite file path or a database URL (default PREDWATCH_DATABASE_URL or
    ./predwatch.db); ``@db_option(help=...)`` where the default means something else."""
    option = click.option("--db", default=None, metavar="PATH|URL", help=help)
    return option(func) if func is not None else option


def fmt(value: float | None, digits: int = 3, *, pct: bool = False) -> str:
    """A score for a terminal table: '—' for missing, percentages when asked."""
    if value is None:
        return "—"
    if pct:
        return f"{value * 100:.{max(digits - 2, 0)}f}%"
    return f"{value:.{digits}f}"


def server_option(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--api-key", default=None, metavar="KEY",
                        help="API key for --server [default: $PREDWATCH_API_KEY]")(func)
    return click.option("--server", default=None, metavar="URL",
                        help="Use a predwatch server instead of a database.")(func)


@contextlib.contextmanager
def cli_errors(error: type[click.ClickException] = click.ClickException) -> Iterator[None]:
    """predwatch errors as CLI errors (a clear message, no traceback)."""
    try:
        yield
    except PredwatchError as exc:
        raise error(exc.message) from None
    except ImportError as exc:  # a missing optional extra names what to install
        raise error(str(exc)) from None


@contextlib.contextmanager
def store_for(db: str | None) -> Iterator[Store]:
    from predwatch.storage import open_store

    store = open_store(resolve_db_url(db))
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def open_backend(db: str | None, server: str | None,
                 api_key: str | None = None) -> Iterator[Store | ApiClient]:
    """What a command works on, chosen once: the predwatch server at ``server`` (a client,
    authenticated with ``api_key`` or ``PREDWATCH_API_KEY``), else the database ``db``."""
    if server:
        from predwatch.client import ApiClient

        key = api_key or Settings.from_env(only=("api_key",)).api_key
        with ApiClient(server, api_key=key, total_timeout=CLI_TIMEOUT_S) as client:
            yield client
        return
    with store_for(db) as store:
        yield store


def is_server(backend: Store | ApiClient) -> TypeIs[ApiClient]:
    """Whether ``open_backend`` chose a server."""
    from predwatch.client import ApiClient

    return isinstance(backend, ApiClient)


def console() -> Any:
    from rich.console import Console

    return Console()
