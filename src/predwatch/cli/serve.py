"""``predwatch serve`` and ``predwatch db upgrade|current``."""

from __future__ import annotations

import errno
import socket

import click

from predwatch.cli.common import cli_errors, db_option, resolve_db_url, sqlite_file
from predwatch.cli.main import main
from predwatch.config import Settings


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before saying "serving" (as uvicorn would
    bind it: SO_REUSEADDR, so a port in TIME_WAIT still counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use (another predwatch serve?): "
                    f"stop it or pass --port N") from None
            problem = f"cannot listen on {host}:{port}: {exc.strerror}"
            raise click.ClickException(problem) from None


@main.command()
@db_option
@click.option("--host", default=None, help="Address to bind [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: 8000].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (use PostgreSQL for more than one).")
@click.option("--auth", type=click.Choice(["auto", "on", "off"]), default=None,
              help="API keys required: auto = off on loopback, on elsewhere [default: auto].")
def serve(db: str | None, host: str | None, port: int | None, workers: int,
          auth: str | None) -> None:
    """Serve the web UI and the JSON API (docs at /docs)."""
    with cli_errors():
        from predwatch.server.run import serve as run_server

        settings = Settings.from_env(database_url=resolve_db_url(db) if db else None,
                                     host=host, port=port, auth=auth)
        ensure_port_free(settings.host, settings.port)
        mode = "API key required" if settings.auth_required else "no auth (loopback only)"
        click.echo(f"predwatch: serving {settings.database_url} at "
                   f"http://{settings.host}:{settings.port} ({mode}; {workers} worker(s))",
                   err=True)
        run_server(settings.database_url, settings.host, settings.port, workers, settings)


@main.group()
def db() -> None:
    """Database schema: upgrade, current revision."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True,
              help="The schema revision to migrate to.")
def db_upgrade(db: str | None, revision: str) -> None:
    """Migrate the database to the newest schema (or --revision)."""
    from predwatch.storage import migrate

    url = resolve_db_url(db)
    with cli_errors():
        migrate.upgrade(url, revision)
        click.echo(f"{url}: schema at {migrate.current(url)}")


@db.command("current")
@db_option
def db_current(db: str | None) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from predwatch.storage import migrate

    url = resolve_db_url(db)
    path = sqlite_file(url)
    if path is not None and not path.exists():  # asking must not create the file
        click.echo(f"(none) (head {migrate.head()}): no database at {path}")
        return
    with cli_errors():
        rev, head = migrate.current(url), migrate.head()
    state = "up to date" if rev == head else (
        "empty" if rev is None else f"needs: predwatch db upgrade --db {url}")
    click.echo(f"{rev or '(none)'} (head {head}): {state}")
