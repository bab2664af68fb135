"""Options and formatting shared by the command modules."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
from typing_extensions import TypeIs

from predwatch.config import Settings
from predwatch.errors import ConfigError, NotFound, PredwatchError

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


# The library's names for the plan, and the flags that give them (errors name the flag).
_FLAGS = {"num_train_epochs": "--epochs", "max_steps": "--max-steps",
          "steps_per_epoch": "--steps-per-epoch", "eval_strategy": "--eval-strategy",
          "eval_steps": "--eval-steps", "prompts=...": "--prompts N",
          "step_interval": "step_interval (in --config)"}


def flag_message(message: str) -> str:
    """A library error about the training plan, with the CLI flags instead of its names."""
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w])", flag, message)
    return message


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


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    _, _, rest = url.partition(":///")
    path = rest.split("?", 1)[0]
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        return None
    return Path(path)


def require_database(url: str) -> None:
    """Refuse a SQLite file that does not exist (a mistyped ``--db``), without creating it."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise NotFound(f"no database at {path} (--db {path}); a training run or "
                       f"'predwatch db upgrade --db {path}' creates one")


@contextlib.contextmanager
def store_for(db: str | None, *, create: bool = False) -> Iterator[Store]:
    """The store at ``--db``. Read-side commands (``create`` False) refuse a missing SQLite
    file and an empty database rather than create one."""
    from predwatch.storage import open_store

    url = resolve_db_url(db)
    if not create:
        require_database(url)
    store = open_store(url, create=create)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def open_backend(db: str | None, server: str | None, api_key: str | None = None, *,
                 create: bool = False) -> Iterator[Store | ApiClient]:
    """What a command works on, chosen once: the predwatch server at ``server`` (a client,
    authenticated with ``api_key`` or ``PREDWATCH_API_KEY``), else the database ``db``
    (created only when ``create``: see ``store_for``)."""
    if server:
        from predwatch.client import ApiClient

        key = api_key or Settings.from_env(only=("api_key",)).api_key
        with ApiClient(server, api_key=key, total_timeout=CLI_TIMEOUT_S) as client:
            yield client
        return
    with store_for(db, create=create) as store:
        yield store


def resolve_run(backend: Store | ApiClient, ref: str) -> str:
    """The id of the run ``ref`` names: its id, or a unique prefix of one.

    Raises NotFound when no run matches, ConfigError listing the candidates when several do.
    """
    try:
        if is_server(backend):
            backend.get(f"/api/runs/{quote(ref, safe='')}")
        else:
            backend.get_run(ref)
        return ref
    except NotFound:
        pass
    if is_server(backend):
        ids = [r["id"] for r in backend.get("/api/runs", search=ref, limit=500)["runs"]]
    else:
        ids = [r.id for r in backend.list_runs(search=ref, limit=500).items]
    found = sorted(i for i in ids if i.startswith(ref))
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise NotFound(f"run {ref!r} not found (no run id is or starts with it; see: "
                       f"predwatch runs list)")
    shown = ", ".join(found[:10]) + (f", … ({len(found)} in all)" if len(found) > 10 else "")
    raise ConfigError(f"run id prefix {ref!r} is ambiguous: {shown}")


def is_server(backend: Store | ApiClient) -> TypeIs[ApiClient]:
    """Whether ``open_backend`` chose a server."""
    from predwatch.client import ApiClient

    return isinstance(backend, ApiClient)


def console() -> Any:
    from rich.console import Console

    return Console()
