"""``predwatch keys create|revoke``: read API keys (stored hashed, shown once)."""

from __future__ import annotations

import click

from predwatch.cli.common import cli_errors, db_option, store_for
from predwatch.cli.main import main


@main.group()
def keys() -> None:
    """Read API keys: each belongs to a user and sees only that user's runs."""


@keys.command("create")
@click.option("--user", required=True, help="The key's user (created when new).")
@click.option("--label", default=None, help="What the key is for.")
@db_option
def keys_create(user: str, label: str | None, db: str | None) -> None:
    """Create an API key and print it (shown once)."""
    from predwatch.server.auth import create_api_key

    with cli_errors(), store_for(db) as store:
        key_id, key = create_api_key(store, user, label=label)
    click.echo(f"key id: {key_id}\nkey:    {key}")
    click.echo("Store the key now: it is not shown again. Send it as X-API-Key (or "
               "PREDWATCH_API_KEY for the CLI).", err=True)


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke an API key by its id."""
    with cli_errors(), store_for(db) as store:
        store.revoke_api_key(key_id)
    click.echo(f"key {key_id}: revoked")
