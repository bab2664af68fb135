"""``predwatch runs list|create|finish|delete|token|revoke``: on a database or a server."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import click

from predwatch.cli.common import (
    cli_errors,
    console,
    db_option,
    is_server,
    open_backend,
    resolve_run,
    server_option,
)
from predwatch.cli.main import main

if TYPE_CHECKING:
    from predwatch.analysis import RunOverview
    from predwatch.client import ApiClient
    from predwatch.storage.base import Store

RUN_HELP = "The run: its id or a unique prefix of it."


@main.group()
def runs() -> None:
    """List, create, finish and delete runs; issue and revoke their write tokens."""


@runs.command("list")
@db_option
@server_option
@click.option("--owner", default=None, help="Only this user's runs (database only).")
@click.option("--search", default=None, help="Substring of id, name or model.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True,
              help="Runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_list(db: str | None, server: str | None, api_key: str | None,
              owner: str | None, search: str | None, limit: int, as_json: bool) -> None:
    """Runs, newest first, with full ids and their last evaluation point's metrics."""
    import json

    with cli_errors(), open_backend(db, server, api_key) as backend:
        if is_server(backend):
            page = backend.get("/api/runs", search=search, limit=limit)
            found, total = page["runs"], page["total_count"]
        else:
            result = backend.list_runs(owner=owner, search=search, limit=limit)
            found, total = [r.model_dump(mode="json") for r in result.items], result.total
        overviews = [_overview(backend, r["id"]) for r in found]
    if as_json:
        for run, overview in zip(found, overviews, strict=True):
            run["last_point"] = {c.metric.name: c.value for c in overview.cards}
            run["last_step"] = overview.summary.last_step
        click.echo(json.dumps({"runs": found, "total_count": total}, indent=2))
        return
    from predwatch.cli.report import print_runs

    print_runs(console(), found, total, overviews)


def _overview(backend: Store | ApiClient, run_id: str) -> RunOverview:
    from predwatch.analysis import RunOverview, run_overview

    if is_server(backend):
        return RunOverview.model_validate(backend.get(f"/api/runs/{run_id}/overview"))
    return run_overview(backend, backend.get_run(run_id))


@runs.command("show")
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the run's overview as JSON.")
@db_option
@server_option
def runs_show(run_ref: str, as_json: bool, db: str | None, server: str | None,
              api_key: str | None) -> None:
    """A run: its evaluation points with their metrics, and each metric's trend.

    RUN is a run id or a unique prefix of one.
    """
    with cli_errors(), open_backend(db, server, api_key) as backend:
        overview = _overview(backend, resolve_run(backend, run_ref))
    if as_json:
        click.echo(overview.model_dump_json(indent=2))
        return
    from predwatch.cli.report import print_run

    print_run(console(), overview)


@runs.command("create")
@db_option
@server_option
@click.option("--id", "run_id", default=None, help="Run id [default: random].")
@click.option("--name", default=None, help="A readable name for the run.")
@click.option("--owner", default=None, help="Owning user (database only; a server uses the "
                                            "API key's user).")
@click.option("--model-name", default=None, help="The model being trained (name or path).")
@click.option("--base-model", default=None, help="The model it was fine-tuned from.")
def runs_create(db: str | None, server: str | None, api_key: str | None,
                run_id: str | None, name: str | None, owner: str | None,
                model_name: str | None, base_model: str | None) -> None:
    """Create a run and print its write token (shown once)."""
    body = {"id": run_id or uuid.uuid4().hex, "name": name, "model_name": model_name,
            "base_model": base_model}
    with cli_errors(), open_backend(db, server, api_key, create=True) as backend:
        if is_server(backend):
            created = backend.call("POST", "/api/runs", auth="key", json=body)
            new_id, token = created["job_id"], created["token"]
        else:
            from predwatch.records import Run
            from predwatch.server.auth import issue_run_token

            run = backend.create_run(Run(owner=owner, **body))  # type: ignore[arg-type]
            new_id, token = run.id, issue_run_token(backend, run.id)
    click.echo(f"run:   {new_id}\ntoken: {token}")
    if not server and owner is None:
        click.echo("Note: the run has no owner; where API keys are required no key sees it "
                   "(pass --owner USER).", err=True)
    click.echo("Store the token now: it is not shown again. A training job uses it as "
               "PREDWATCH_RUN_TOKEN (with PREDWATCH_SERVER_URL).", err=True)


@runs.command("finish")
@click.argument("run_id", metavar="RUN")
@click.option("--status", type=click.Choice(["finished", "failed", "running"]),
              default="finished", show_default=True, help="The run's new status.")
@db_option
@server_option
def runs_finish(run_id: str, status: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Mark a run finished (or failed)."""
    with cli_errors(), open_backend(db, server, api_key) as backend:
        run_id = resolve_run(backend, run_id)
        if is_server(backend):
            backend.call("POST", f"/api/runs/{run_id}/finish", json={"status": status})
        else:
            backend.finish_run(run_id, status=status)
    click.echo(f"run {run_id}: {status}")


@runs.command("delete")
@click.argument("run_id", metavar="RUN")
@click.confirmation_option(prompt="Delete the run with all its predictions?")
@db_option
@server_option
def runs_delete(run_id: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Delete a run with its evaluation points, predictions, tokens and checkpoint jobs."""
    with cli_errors(), open_backend(db, server, api_key) as backend:
        run_id = resolve_run(backend, run_id)
        if is_server(backend):
            backend.call("DELETE", f"/api/runs/{run_id}")
        else:
            backend.delete_run(run_id)
    click.echo(f"run {run_id}: deleted")


@runs.command("token")
@click.argument("run_id", metavar="RUN")
@click.option("--revoke-others", is_flag=True, help="Revoke the run's existing tokens.")
@db_option
@server_option
def runs_token(run_id: str, revoke_others: bool, db: str | None, server: str | None,
               api_key: str | None) -> None:
    """Issue a new write token for a run (shown once)."""
    with cli_errors(), open_backend(db, server, api_key) as backend:
        run_id = resolve_run(backend, run_id)
        if is_server(backend):
            token = backend.call("POST", f"/api/runs/{run_id}/tokens",
                                 params={"revoke_others": revoke_others})["token"]
        else:
            from predwatch.server.auth import issue_run_token

            backend.get_run(run_id)
            if revoke_others:
                backend.revoke_run_tokens(run_id)
            token = issue_run_token(backend, run_id)
    click.echo(f"token: {token}")


@runs.command("revoke")
@click.argument("run_id", metavar="RUN")
@db_option
@server_option
def runs_revoke(run_id: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Revoke every write token of a run (their requests then answer 401)."""
    with cli_errors(), open_backend(db, server, api_key) as backend:
        run_id = resolve_run(backend, run_id)
        if is_server(backend):
            revoked = backend.call("DELETE", f"/api/runs/{run_id}/tokens")["revoked"]
        else:
            backend.get_run(run_id)
            revoked = backend.revoke_run_tokens(run_id)
    click.echo(f"run {run_id}: {revoked} token(s) revoked")
