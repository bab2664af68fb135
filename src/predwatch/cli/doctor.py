"""``predwatch doctor [CONFIG]``: the pre-flight checklist before a training run records.

One line per check (PASS, FAIL, or SKIP when there is nothing to check), then the verdict; exit
code 0 when nothing failed, 1 otherwise. Nothing is created or written: a database that does not
exist yet is only checked for being creatable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from predwatch.cli.common import (
    CLI_TIMEOUT_S,
    db_option,
    flag_message,
    resolve_db_url,
    sqlite_file,
)
from predwatch.cli.main import main
from predwatch.config import RECORDER_SETTINGS, PredictionsConfig, Settings
from predwatch.errors import PredwatchError

if TYPE_CHECKING:
    from predwatch.recording.estimate import Estimate

Verdict = Literal["PASS", "FAIL", "SKIP"]


@dataclass
class Check:
    """One line of the checklist."""

    verdict: Verdict
    name: str
    detail: str


def check_config(path: str | None) -> tuple[Check, PredictionsConfig | None]:
    """The config parses and validates (every bad field is listed)."""
    if path is None:
        return Check("PASS", "config", "no CONFIG given: the defaults"), PredictionsConfig()
    try:
        config = PredictionsConfig.from_file(path)
    except PredwatchError as exc:
        return Check("FAIL", "config", f"{path}: {exc.message}"), None
    return Check("PASS", "config", f"{path}: valid"), config


def check_prompts(config: PredictionsConfig, settings: Settings) -> tuple[Check, int | None]:
    """The prompts source is readable and yields usable records (with why others were not);
    with how many are answered per point (None: not known here)."""
    name = "prompts"
    try:
        if config.source == "set":
            return _check_set(config, settings)
        if not config.samples_path:
            return Check("SKIP", name, "no samples_path: the training job passes the dataset "
                                       "(PredictionsCallback(dataset=...)); nothing to read "
                                       "here"), None
        from predwatch.sampling import select_samples

        selection = select_samples(config.samples_path, None, config.seed, fields=config.fields)
    except (PredwatchError, ValueError) as exc:
        return Check("FAIL", name, getattr(exc, "message", str(exc))), None
    chosen = config.effective_sample_count
    used = min(chosen, selection.valid_records) if chosen else selection.valid_records
    detail = (f"{config.samples_path}: {selection.valid_records} usable of "
              f"{selection.total_records} records; {used} answered per point")
    problems = selection.problems_summary()
    if problems:
        detail += f" ({problems})"
    if chosen and selection.valid_records < chosen:
        detail += f"; fewer than sample_count {chosen}"
    return Check("PASS", name, detail), used


def _check_set(config: PredictionsConfig, settings: Settings) -> tuple[Check, int | None]:
    from predwatch.recording.set_source import fetch_set, is_file_ref
    from predwatch.sets import parse_ref, read_items

    ref = config.set or config.samples_path
    if not ref:
        return Check("FAIL", "prompts", "source 'set' needs 'set' (NAME[@VERSION] or a "
                                        "file)"), None
    if is_file_ref(ref):
        count = len(read_items(ref))
        where = ref
    elif settings.server_url:
        version, items = fetch_set(settings, *parse_ref(ref))
        count, where = len(items), f"{version.ref} on {settings.server_url}"
    else:
        from predwatch.cli.common import store_for

        with store_for(settings.database_url) as store:
            version = store.get_set_version(*parse_ref(ref))
        count, where = version.item_count, version.ref
    if count == 0:
        return Check("FAIL", "prompts", f"{where}: the set has no items"), None
    used = min(config.sample_count, count) if config.sample_count else count
    return Check("PASS", "prompts", f"{where}: {count} items; {used} answered per point"), used


def check_database(url: str) -> Check:
    """The database exists (or can be created) and its schema is current; creates nothing."""
    from predwatch.storage import migrate

    name = "database"
    path = sqlite_file(url)
    if path is not None and not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            return Check("FAIL", name, f"{path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            return Check("FAIL", name, f"{path}: directory {parent} is not writable")
        return Check("PASS", name, f"{path}: does not exist yet; created at the first write")
    if path is not None and not (path.is_file() and os.access(path, os.R_OK | os.W_OK)):
        return Check("FAIL", name, f"{path}: not a readable and writable file")
    try:
        revision, head = migrate.current(url), migrate.head()
    except PredwatchError as exc:
        return Check("FAIL", name, f"{url}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - a driver's error (refused, bad password) is the finding
        return Check("FAIL", name, f"{url}: unreachable ({type(exc).__name__}: {exc})")
    if revision is None:
        return Check("PASS", name, f"{url}: reachable, no predwatch schema yet (created at "
                                   f"head on the first write)")
    if revision != head:
        return Check("FAIL", name, f"{url}: schema {revision}, this predwatch needs {head}: "
                                   f"predwatch db upgrade --db {url}")
    return Check("PASS", name, f"{url}: schema current ({head})")


def check_server(url: str, token: str | None, api_key: str | None) -> list[Check]:
    """The server answers ``/api/health``, and ``/api/whoami`` accepts the credentials."""
    from predwatch.client import ApiClient

    checks = []
    with ApiClient(url, token=token, api_key=api_key, total_timeout=CLI_TIMEOUT_S,
                   request_timeout=CLI_TIMEOUT_S) as client:
        try:
            health = client.get("/api/health")
        except PredwatchError as exc:
            return [Check("FAIL", "server", f"{url}: {exc.message}")]
        auth = "API keys required" if health.get("auth_required") else "no auth"
        checks.append(Check("PASS", "server", f"{url}: predwatch {health.get('version')} on "
                                              f"{health.get('database')} ({auth})"))
        if not token and not api_key:
            verdict: Verdict = "FAIL" if health.get("auth_required") else "PASS"
            checks.append(Check(verdict, "credentials", "no run token or API key given "
                                "(PREDWATCH_RUN_TOKEN / --token)"))
            return checks
        try:
            who = client.get("/api/whoami")
        except PredwatchError as exc:
            return [*checks, Check("FAIL", "credentials", exc.message)]
    run = who.get("run") or {}
    whom = f"run {run.get('id')}" if run else f"user {who.get('user')}"
    checks.append(Check("PASS", "credentials", f"accepted: {whom}"))
    return checks


def check_cost(config: PredictionsConfig, plan: dict[str, Any]) -> Check:
    """What recording will cost the run, from the plan flags given."""
    from predwatch.errors import ConfigError
    from predwatch.recording.estimate import estimate_cost

    try:
        estimate = estimate_cost(config, **plan)
    except ConfigError as exc:
        return Check("SKIP", "cost", f"no estimate: {flag_message(exc.message)}")
    return Check("FAIL" if estimate.over_budget else "PASS", "cost", _describe(estimate))


def _describe(e: Estimate) -> str:
    parts = [f"{e.points} points x {e.prompts} answers = {e.predictions} answers"]
    if e.seconds is not None:
        parts.append(f"~{e.seconds:.0f}s generating")
    if e.share is not None:
        parts.append(f"{e.share:.1%} of training time (budget {e.budget:.0%})")
    return ", ".join(parts) + (f"; {e.warning}" if e.warning else "")


@main.command()
@click.argument("config_path", metavar="[CONFIG]", required=False,
                type=click.Path(dir_okay=False))
@db_option(help="The database the run will write to [default: $PREDWATCH_DATABASE_URL or "
                "./predwatch.db]; checked, never created.")
@click.option("--server", default=None, metavar="URL",
              help="The server the run will send to instead [default: $PREDWATCH_SERVER_URL].")
@click.option("--token", default=None, metavar="TOKEN",
              help="The run's write token for --server [default: $PREDWATCH_RUN_TOKEN].")
@click.option("--api-key", default=None, metavar="KEY",
              help="An API key for --server [default: $PREDWATCH_API_KEY].")
@click.option("--epochs", type=float, default=None, help="num_train_epochs, for the cost.")
@click.option("--max-steps", type=int, default=None, help="max_steps, for the cost.")
@click.option("--steps-per-epoch", type=float, default=None,
              help="Optimizer steps per epoch, for the cost.")
@click.option("--eval-strategy", type=click.Choice(["steps", "epoch", "no"]), default=None,
              help="eval_strategy, for the cost (sample_frequency 'eval').")
@click.option("--eval-steps", type=float, default=None, help="eval_steps, for the cost.")
@click.option("--tokens-per-second", type=float, default=None,
              help="Generation throughput, for the time and share.")
@click.option("--seconds-per-step", type=float, default=None,
              help="Training speed, for the share.")
def doctor(config_path: str | None, db: str | None, server: str | None, token: str | None,
           api_key: str | None, epochs: float | None, max_steps: int | None,
           steps_per_epoch: float | None, eval_strategy: str | None, eval_steps: float | None,
           tokens_per_second: float | None, seconds_per_step: float | None) -> None:
    """Check a run's setup before training: config, prompts, destination, cost.

    Exit code 0 when every check passed (or had nothing to check), 1 when one failed.
    """
    env = Settings.from_env(only=RECORDER_SETTINGS)
    server = server or (env.server_url if not db else None)
    token = token or env.run_token
    api_key = api_key or env.api_key
    checks: list[Check] = []
    config_check, config = check_config(config_path)
    checks.append(config_check)
    settings = Settings.from_env(only=RECORDER_SETTINGS, database_url=resolve_db_url(db),
                                 server_url=server, run_token=token, api_key=api_key)
    answered: int | None = None
    if config is not None:
        prompts_check, answered = check_prompts(config, settings)
        checks.append(prompts_check)
    if server:
        checks.extend(check_server(server, token, api_key))
    else:
        checks.append(check_database(resolve_db_url(db)))
    if config is not None:
        plan = {"num_train_epochs": epochs, "max_steps": max_steps,
                "steps_per_epoch": steps_per_epoch, "eval_strategy": eval_strategy,
                "eval_steps": eval_steps, "tokens_per_second": tokens_per_second,
                "seconds_per_step": seconds_per_step, "prompts": answered}
        checks.append(check_cost(config, plan))
    styles = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}
    for c in checks:
        click.echo(f"{click.style(c.verdict, fg=styles[c.verdict], bold=True)}  "
                   f"{c.name}: {c.detail}")
    failed = [c.name for c in checks if c.verdict == "FAIL"]
    if failed:
        click.echo(click.style("NOT READY", fg="red", bold=True) + f": {', '.join(failed)} failed")
        raise SystemExit(1)
    click.echo(click.style("READY", fg="green", bold=True) + ": every check passed")
