"""``predwatch serve``, ``db``, ``runs``, ``keys``, ``compare``, ``check`` and ``replay``.

Commands work on a database (``--db``, default ``$PREDWATCH_DATABASE_URL`` or ./predwatch.db);
the read commands, ``runs create`` and the run-management commands also work against a server
(``--server URL`` with ``--api-key`` / ``$PREDWATCH_API_KEY``). ``check`` is a CI gate: it
exits 0 when at most ``--max-regressions`` prompts regressed, 1 when more did, 2 on any other
error (unknown run, unreachable server, bad options).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from predwatch.cli import main
from predwatch.cli.common import db_option, resolve_db_url
from predwatch.config import Settings
from predwatch.errors import PredwatchError

if TYPE_CHECKING:  # the database layer is imported by the commands that use it
    from predwatch.storage.base import Store


class GateError(click.ClickException):
    """Any failure of ``check`` other than the verdict itself (exit code 2)."""

    exit_code = 2


def server_option(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--api-key", default=None, metavar="KEY",
                        help="API key for --server [default: $PREDWATCH_API_KEY]")(func)
    return click.option("--server", default=None, metavar="URL",
                        help="Use a predwatch server instead of a database.")(func)


@contextlib.contextmanager
def _errors(error: type[click.ClickException] = click.ClickException) -> Iterator[None]:
    """predwatch errors as CLI errors (a clear message, no traceback)."""
    try:
        yield
    except PredwatchError as exc:
        raise error(exc.message) from None
    except ImportError as exc:  # a missing optional extra names what to install
        raise error(str(exc)) from None


@contextlib.contextmanager
def _store(db: str | None) -> Iterator[Store]:
    from predwatch.storage import open_store

    store = open_store(resolve_db_url(db))
    try:
        yield store
    finally:
        store.close()


def _remote(server: str, api_key: str | None,
            error: type[click.ClickException] = click.ClickException) -> Any:
    from predwatch.cli.remote import Remote

    return Remote(server, api_key, error=error)


def _console() -> Any:
    from rich.console import Console

    return Console()


# --- serve and db -----------------------------------------------------------------------------
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
    with _errors():
        from predwatch.server.run import serve as run_server

        settings = Settings.from_env(database_url=resolve_db_url(db) if db else None,
                                     host=host, port=port, auth=auth)
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
@click.option("--revision", default="head", show_default=True)
def db_upgrade(db: str | None, revision: str) -> None:
    """Migrate the database to the newest schema (or --revision)."""
    from predwatch.storage import migrate

    url = resolve_db_url(db)
    with _errors():
        migrate.upgrade(url, revision)
        click.echo(f"{url}: schema at {migrate.current(url)}")


@db.command("current")
@db_option
def db_current(db: str | None) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from predwatch.storage import migrate

    url = resolve_db_url(db)
    with _errors():
        rev, head = migrate.current(url), migrate.head()
    state = "up to date" if rev == head else (
        "empty" if rev is None else f"needs: predwatch db upgrade --db {url}")
    click.echo(f"{rev or '(none)'} (head {head}): {state}")


# --- runs -----------------------------------------------------------------------------------
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
    """Runs, newest first."""
    import json

    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                page = remote.get("/api/runs", search=search, limit=limit)
            found, total = page["runs"], page["total_count"]
        else:
            with _store(db) as store:
                result = store.list_runs(owner=owner, search=search, limit=limit)
            found, total = [r.model_dump(mode="json") for r in result.items], result.total
    if as_json:
        click.echo(json.dumps({"runs": found, "total_count": total}, indent=2))
        return
    from predwatch.cli.report import print_runs

    print_runs(_console(), found, total)


@runs.command("create")
@db_option
@server_option
@click.option("--id", "run_id", default=None, help="Run id [default: random].")
@click.option("--name", default=None)
@click.option("--owner", default=None, help="Owning user (database only; a server uses the "
                                            "API key's user).")
@click.option("--model-name", default=None)
@click.option("--base-model", default=None)
def runs_create(db: str | None, server: str | None, api_key: str | None,
                run_id: str | None, name: str | None, owner: str | None,
                model_name: str | None, base_model: str | None) -> None:
    """Create a run and print its write token (shown once)."""
    body = {"id": run_id or uuid.uuid4().hex, "name": name, "model_name": model_name,
            "base_model": base_model}
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                created = remote.call("POST", "/api/runs", json=body)
            new_id, token = created["job_id"], created["token"]
        else:
            from predwatch.records import Run
            from predwatch.server.auth import issue_run_token

            with _store(db) as store:
                run = store.create_run(Run(owner=owner, **body))  # type: ignore[arg-type]
                new_id, token = run.id, issue_run_token(store, run.id)
    click.echo(f"run:   {new_id}\ntoken: {token}")
    if not server and owner is None:
        click.echo("Note: the run has no owner; where API keys are required no key sees it "
                   "(pass --owner USER).", err=True)
    click.echo("Store the token now: it is not shown again. A training job uses it as "
               "PREDWATCH_RUN_TOKEN (with PREDWATCH_SERVER_URL).", err=True)


@runs.command("finish")
@click.argument("run_id")
@click.option("--status", type=click.Choice(["finished", "failed", "running"]),
              default="finished", show_default=True)
@db_option
@server_option
def runs_finish(run_id: str, status: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Mark a run finished (or failed)."""
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                remote.call("POST", f"/api/runs/{run_id}/finish", json={"status": status})
        else:
            with _store(db) as store:
                store.finish_run(run_id, status=status)
    click.echo(f"run {run_id}: {status}")


@runs.command("delete")
@click.argument("run_id")
@click.confirmation_option(prompt="Delete the run with all its predictions?")
@db_option
@server_option
def runs_delete(run_id: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Delete a run with its evaluation points, predictions and tokens."""
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                remote.call("DELETE", f"/api/runs/{run_id}")
        else:
            with _store(db) as store:
                store.delete_run(run_id)
    click.echo(f"run {run_id}: deleted")


@runs.command("token")
@click.argument("run_id")
@click.option("--revoke-others", is_flag=True, help="Revoke the run's existing tokens.")
@db_option
@server_option
def runs_token(run_id: str, revoke_others: bool, db: str | None, server: str | None,
               api_key: str | None) -> None:
    """Issue a new write token for a run (shown once)."""
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                token = remote.call("POST", f"/api/runs/{run_id}/tokens",
                                    params={"revoke_others": revoke_others})["token"]
        else:
            from predwatch.server.auth import issue_run_token

            with _store(db) as store:
                store.get_run(run_id)
                if revoke_others:
                    store.revoke_run_tokens(run_id)
                token = issue_run_token(store, run_id)
    click.echo(f"token: {token}")


@runs.command("revoke")
@click.argument("run_id")
@db_option
@server_option
def runs_revoke(run_id: str, db: str | None, server: str | None,
                api_key: str | None) -> None:
    """Revoke every write token of a run (their requests then answer 401)."""
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                revoked = remote.call("DELETE", f"/api/runs/{run_id}/tokens")["revoked"]
        else:
            with _store(db) as store:
                store.get_run(run_id)
                revoked = store.revoke_run_tokens(run_id)
    click.echo(f"run {run_id}: {revoked} token(s) revoked")


# --- keys -----------------------------------------------------------------------------------
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

    with _errors(), _store(db) as store:
        key_id, key = create_api_key(store, user, label=label)
    click.echo(f"key id: {key_id}\nkey:    {key}")
    click.echo("Store the key now: it is not shown again. Send it as X-API-Key (or "
               "PREDWATCH_API_KEY for the CLI).", err=True)


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke an API key by its id."""
    with _errors(), _store(db) as store:
        store.revoke_api_key(key_id)
    click.echo(f"key {key_id}: revoked")


# --- compare and check --------------------------------------------------------------------------
@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--step-a", type=int, default=None, help="RUN_A's point [default: its last].")
@click.option("--step-b", type=int, default=None, help="RUN_B's point [default: its last].")
@click.option("--regressed-only", is_flag=True, help="List only regressed prompts.")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=None,
              help="Character error rate change that counts [default: 0.05].")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Prompts to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@db_option
@server_option
def compare(run_a: str, run_b: str, step_a: int | None, step_b: int | None,
            regressed_only: bool, tolerance: float | None, limit: int, as_json: bool,
            db: str | None, server: str | None, api_key: str | None) -> None:
    """Compare RUN_B with RUN_A prompt by prompt: flips, score deltas, regressions."""
    from predwatch.analysis import Comparison, compare_runs

    params: dict[str, Any] = {"step_a": step_a, "step_b": step_b,
                              "regressed_only": regressed_only}
    if tolerance is not None:
        params["tolerance"] = tolerance
    with _errors():
        if server:
            with _remote(server, api_key) as remote:
                data = remote.get("/api/compare", run_a=run_a, run_b=run_b, limit=10000,
                                  **params)
            comparison = Comparison.model_validate(data)
        else:
            with _store(db) as store:
                comparison = compare_runs(store, run_a, run_b, **params)
    if as_json:
        click.echo(comparison.model_dump_json(indent=2))
        return
    from predwatch.cli.report import print_comparison

    print_comparison(_console(), comparison, limit=limit)


@main.command()
@click.argument("run")
@click.option("--baseline", required=True, help="The run to compare against.")
@click.option("--max-regressions", type=click.IntRange(0), default=0, show_default=True,
              help="Regressed prompts allowed before failing.")
@click.option("--step", type=int, default=None, help="RUN's point [default: its last].")
@click.option("--baseline-step", type=int, default=None,
              help="The baseline's point [default: its last].")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=None,
              help="Character error rate change that counts [default: 0.05].")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="Prompts to list in the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@db_option
@server_option
def check(run: str, baseline: str, max_regressions: int, step: int | None,
          baseline_step: int | None, tolerance: float | None, limit: int, as_json: bool,
          db: str | None, server: str | None, api_key: str | None) -> None:
    """Fail (exit 1) when more than --max-regressions prompts regressed from the baseline.

    Exit codes: 0 passed, 1 too many regressions, 2 error (unknown run, bad options, ...).
    """
    from predwatch.analysis import RegressionReport, regression_report

    params: dict[str, Any] = {"step": step, "baseline_step": baseline_step,
                              "max_regressions": max_regressions}
    if tolerance is not None:
        params["tolerance"] = tolerance
    with _errors(GateError):
        if server:
            with _remote(server, api_key, GateError) as remote:
                data = remote.get(f"/api/runs/{run}/check", baseline=baseline, **params)
            report = RegressionReport.model_validate(data)
        else:
            with _store(db) as store:
                report = regression_report(store, run, baseline=baseline, **params)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        from predwatch.cli.report import print_check

        print_check(_console(), report, limit=limit)
    if not report.passed:
        raise SystemExit(1)


# --- replay ---------------------------------------------------------------------------------
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
    from predwatch.cli.replay import replay_spool

    settings = Settings.from_env()
    with _errors():
        result = replay_spool(
            spool_dir or settings.spool_dir, db_url=resolve_db_url(db) if db else None,
            server_url=server, token=token or settings.run_token,
            api_key=api_key or settings.api_key, timeout=timeout)
    click.echo(result.summary())
    for line in result.problems:
        click.echo(f"  {line}", err=True)
    if result.pending:
        raise SystemExit(1)
