"""Options and formatting shared by the command modules."""

from __future__ import annotations

from typing import Any, Callable, Optional

import click

from predwatch.config import Settings


def resolve_db_url(db: Optional[str]) -> str:
    """A database URL from ``--db`` (a URL, or a SQLite file path), else the environment."""
    if db:
        return db if "://" in db else f"sqlite:///{db}"
    return Settings.from_env().database_url


_DB_HELP = "SQLite file or database URL [default: $PREDWATCH_DATABASE_URL or ./predwatch.db]"


def db_option(func: Optional[Callable[..., Any]] = None, *, help: str = _DB_HELP) -> Any:
    """``--db``: a SQLite file path or a database URL (default PREDWATCH_DATABASE_URL or
    ./predwatch.db); ``@db_option(help=...)`` where the default means something else."""
    option = click.option("--db", default=None, metavar="PATH|URL", help=help)
    return option(func) if func is not None else option


def fmt(value: Optional[float], digits: int = 3, *, pct: bool = False) -> str:
    """A score for a terminal table: '—' for missing, percentages when asked."""
    if value is None:
        return "—"
    if pct:
        return f"{value * 100:.{max(digits - 2, 0)}f}%"
    return f"{value:.{digits}f}"
