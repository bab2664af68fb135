"""``predwatch keys create|list|revoke``: read API keys (stored hashed, shown once)."""

from __future__ import annotations

import click

from predwatch.cli.common import cli_errors, console, db_option, store_for
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

    with cli_errors(), store_for(db, create=True) as store:
        key_id, key = create_api_key(store, user, label=label)
    click.echo(f"key id: {key_id}\nkey:    {key}")
    click.echo("Store the key now: it is not shown again. Send it as X-API-Key (or "
               "PREDWATCH_API_KEY for the CLI).", err=True)


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys [default: everyone's].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def keys_list(user: str | None, as_json: bool, db: str | None) -> None:
    """API keys (ids, users, labels, when created and revoked; never the keys)."""
    import json

    with cli_errors(), store_for(db) as store:
        found = store.list_api_keys(user)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"API keys ({len(found)})", title_justify="left")
    for col in ("id", "user", "label", "created", "revoked"):
        table.add_column(col, no_wrap=col == "id")
    for k in found:
        table.add_row(k["id"], k["user"], k["label"] or "", str(k["created_at"])[:19],
                      str(k["revoked_at"])[:19] if k["revoked_at"] else "")
    console().print(table)


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke an API key by its id."""
    with cli_errors(), store_for(db) as store:
        store.revoke_api_key(key_id)
    click.echo(f"key {key_id}: revoked")
