"""``predwatch replay``: deliver the batches a sink left in its spool."""

from __future__ import annotations

import click

from predwatch.cli.common import cli_errors, db_option, resolve_db_url, server_option
from predwatch.cli.main import main
from predwatch.config import Settings


@main.command()
@click.option("--spool", "spool_dir", default=None, metavar="DIR",
              help="Spool directory [default: $PREDWATCH_SPOOL_DIR or .predwatch/spool].")
@db_option(help="Send every batch to this database [default: where each batch was headed].")
@server_option
@click.option("--token", default=None, help="Run write token for --server "
              "[default: $PREDWATCH_RUN_TOKEN; else one is issued per run with the API key].")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds to keep retrying one batch.")
def replay(spool_dir: str | None, db: str | None, server: str | None,
           api_key: str | None, token: str | None, timeout: float) -> None:
    """Deliver spooled batches (undelivered predictions) and report the counts.

    Each batch goes to --db or --server when given, else where it was headed when spooled.
    Delivery is idempotent: rows already stored are counted, not duplicated.
    """
    from predwatch.delivery.replay import replay_spool

    settings = Settings.from_env()
    with cli_errors():
        result = replay_spool(
            spool_dir or settings.spool_dir, db_url=resolve_db_url(db) if db else None,
            server_url=server, token=token or settings.run_token,
            api_key=api_key or settings.api_key, timeout=timeout)
    click.echo(result.summary())
    for line in result.problems:
        click.echo(f"  {line}", err=True)
    if result.pending:
        raise SystemExit(1)
