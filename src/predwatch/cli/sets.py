"""``predwatch sets import|list|show|export|diff``, ``predwatch regenerate`` and ``estimate``.

Every command works on a database (``--db``: a SQLite file or URL; default
``$PREDWATCH_DATABASE_URL`` or ./predwatch.db). ``--json`` prints the library's record instead
of a table. ``regenerate`` exits 1 when the answer does not match.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from predwatch.cli.common import db_option, flag_message, resolve_run, store_for
from predwatch.cli.main import main
from predwatch.errors import PredwatchError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """predwatch errors as CLI errors: the message, no traceback."""
    try:
        yield
    except PredwatchError as exc:
        raise click.ClickException(exc.message) from None
    except ImportError as exc:  # a missing optional extra names what to install
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _store(db: str | None, *, create: bool = False) -> Iterator[Any]:
    """The database at ``--db``; only commands that write one (``create``) create it."""
    with _errors(), store_for(db, create=create) as store:
        yield store


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _print_json(value: Any) -> None:
    from pydantic_core import to_json

    click.echo(to_json(value, indent=2).decode())


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.group()
def sets() -> None:
    """Versioned prediction sets ("golden sets") kept in the database."""


@sets.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Set name [default: the file name without suffixes].")
@click.option("--description", default=None, help="What this version changes.")
@db_option
@json_option
def import_(path: str, name: str | None, description: str | None, db: str | None,
            as_json: bool) -> None:
    """Import PATH (JSON, JSON Lines, CSV; optionally .gz) as a new version of a set.

    Importing content that a version already has prints that version and changes nothing.
    """
    from predwatch.sets.stored import import_set

    with _store(db, create=True) as store:
        version, created = import_set(store, path, name=name, description=description)
    if as_json:
        _print_json({"version": version, "created": created})
        return
    state = "created" if created else "unchanged (this content is already that version)"
    click.echo(f"{version.ref}: {version.item_count} items, {state}")


@sets.command("list")
@db_option
@json_option
def list_(db: str | None, as_json: bool) -> None:
    """List the sets with their latest version."""
    from rich.table import Table


    with _store(db) as store:
        found = store.list_sets()
    if as_json:
        _print_json({"sets": found})
        return
    if not found:
        click.echo("no prediction sets (create one with: predwatch sets import FILE)")
        return
    table = Table(box=None, padding=(0, 2))
    for col in ("name", "latest", "items", "created", "description"):
        table.add_column(col)
    for s in found:
        table.add_row(s.name, str(s.latest_version or "—"), str(s.item_count or 0),
                      f"{s.created_at:%Y-%m-%d %H:%M}", _short(s.description or "", 40))
    _console().print(table)


@sets.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--limit", default=20, show_default=True, help="Items to show (0: none).")
@db_option
@json_option
def show(ref: str, limit: int, db: str | None, as_json: bool) -> None:
    """Show a set's versions and the first items of one version (default: the latest)."""
    from rich.table import Table

    from predwatch.sets import parse_ref

    with _store(db) as store:
        name, number = parse_ref(ref)
        found = store.get_set(name)
        version, items = store.list_set_items(name, number, limit=limit)
    if as_json:
        _print_json({"set": found, "version": version, "items": items})
        return
    console = _console()
    console.print(f"[bold]{found.name}[/] ({found.id}) — {len(found.versions)} version(s)")
    for v in found.versions:
        marker = "*" if v.version == version.version else " "
        console.print(f" {marker} v{v.version}  {v.item_count} items  {v.content_hash[:12]}  "
                      f"{v.created_at:%Y-%m-%d %H:%M}  {v.source or ''}  {v.description or ''}")
    if not items:
        return
    table = Table(title=f"{version.ref}: first {len(items)} of {version.item_count} items",
                  title_justify="left")
    for col in ("item id", "prompt", "ground truth", "validators", "tags"):
        table.add_column(col)
    for item in items:
        table.add_row(item.item_id, _short(item.prompt, 50), _short(item.ground_truth or "", 30),
                      ", ".join(v.get("name") or v["kind"] for v in item.validators),
                      ", ".join(item.tags))
    console.print(table)


@sets.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="File to write (.jsonl, .json, .csv; .gz compresses) [default: stdout].")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "json", "csv"]), default=None,
              help="Format [default: from the file name, else jsonl].")
@db_option
def export(ref: str, output: str | None, fmt: str | None, db: str | None) -> None:
    """Write a version's items back to a file that ``sets import`` reads to the same version."""
    from predwatch.sets import export_file, parse_ref, write_items

    with _store(db) as store:
        name, number = parse_ref(ref)
        version, items = store.list_set_items(name, number)
        if output is None:
            write_items(items, sys.stdout, fmt or "jsonl")
            return
        count = export_file(items, output, fmt)
    click.echo(f"{version.ref}: wrote {count} items to {output}", err=True)


@sets.command()
@click.argument("name")
@click.argument("a", type=int)
@click.argument("b", type=int, required=False)
@db_option
@json_option
def diff(name: str, a: int, b: int | None, db: str | None, as_json: bool) -> None:
    """What changed from version A to version B (default: the latest) of set NAME."""
    from rich.markup import escape

    from predwatch.sets.stored import diff_versions

    with _store(db) as store:
        result = diff_versions(store, name, a, b)
    if as_json:
        _print_json(result)
        return
    console = _console()
    console.print(f"[bold]{name}[/] v{result.a} → v{result.b}: {len(result.added)} added, "
                  f"{len(result.removed)} removed, {len(result.changed)} changed, "
                  f"{result.unchanged} unchanged")
    for item in result.added:
        console.print(f"[green]+ {item.item_id}[/]  {_short(item.prompt)}")
    for item in result.removed:
        console.print(f"[red]- {item.item_id}[/]  {_short(item.prompt)}")
    for change in result.changed:
        ids = change.after.item_id if change.before.item_id == change.after.item_id else (
            f"{change.before.item_id} → {change.after.item_id}")
        fields = [f for f in change.fields if f != "tags"]
        if "tags" in change.fields:
            fields.append("tags " + " ".join([*(f"+{t}" for t in change.tags_added),
                                              *(f"-{t}" for t in change.tags_removed)]))
        console.print(f"[yellow]~ {ids}[/]  ({escape(', '.join(fields))})  "
                      f"{_short(change.after.prompt)}")


@main.command()
@click.option("--run", "run_id", required=True, help="The run id.")
@click.option("--step", type=int, required=True, help="The evaluation point's step.")
@click.option("--prompt-id", required=True, help="The prompt's id (prompt_id of the row).")
@click.option("--model", "model_path", required=True, type=click.Path(file_okay=False),
              help="The saved checkpoint folder (e.g. out/checkpoint-STEP).")
@click.option("--tokenizer", "tokenizer_path", default=None, type=click.Path(file_okay=False),
              help="The tokenizer's folder, when the checkpoint has none.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: as recorded].")
@click.option("--single", is_flag=True,
              help="Regenerate this prompt alone instead of its whole recorded batch plan.")
@click.option("--sample-number", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which of the prompt's answers (num_samples > 1: 0 .. n-1).")
@db_option
@json_option
def regenerate(run_id: str, step: int, prompt_id: str, model_path: str,
               tokenizer_path: str | None, device: str | None, single: bool,
               sample_number: int, db: str | None, as_json: bool) -> None:
    """Reproduce one recorded answer from a saved checkpoint; exit 1 when it does not match."""
    from dataclasses import asdict

    from predwatch.repro.regenerate import regenerate as run_regenerate

    with _store(db) as store:
        result = run_regenerate(store, resolve_run(store, run_id), step, prompt_id, model_path,
                                device=device, tokenizer_path=tokenizer_path,
                                whole_point=not single, sample_number=sample_number)
    if as_json:
        _print_json(asdict(result))
    else:
        console = _console()
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        console.print(f"recorded:    {result.recorded!r}")
        console.print(f"regenerated: {result.regenerated!r}")
        if result.error:
            console.print(f"[red]generation failed:[/] {result.error}")
        verdict = "[green]MATCH[/]" if result.matches else "[red]DIFFERENT[/]"
        console.print(f"{verdict} ({result.prompt_count} prompt(s) regenerated)")
    if not result.matches:
        sys.exit(1)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A predictions config (JSON) [default with --run: the run's].")
@click.option("--epochs", type=float, default=None, help="num_train_epochs of the plan.")
@click.option("--max-steps", type=int, default=None, help="max_steps (wins over --epochs).")
@click.option("--steps-per-epoch", type=float, default=None,
              help="Optimizer steps per epoch (not with --run: measured).")
@click.option("--eval-strategy", type=click.Choice(["steps", "epoch", "no"]), default=None,
              help="eval_strategy of the plan (for sample_frequency 'eval').")
@click.option("--eval-steps", type=float, default=None, help="eval_steps (a fraction < 1 too).")
@click.option("--prompts", type=int, default=None,
              help="Answers per point [default: sample_count; for a set, at most its size; "
                   "not with --run: measured].")
@click.option("--tokens-per-second", type=float, default=None,
              help="Measured throughput (not with --run: measured).")
@click.option("--seconds-per-step", type=float, default=None,
              help="Measured training speed (not with --run: measured).")
@click.option("--frequency", type=click.Choice(["epoch", "eval", "steps"]), default=None,
              help="Override sample_frequency.")
@click.option("--run", "run_id", default=None,
              help="Project from a run's first evaluation point (id or prefix); the plan "
                   "flags given override the run's training arguments.")
@db_option
@json_option
def estimate(config_path: str | None, epochs: float | None, max_steps: int | None,
             steps_per_epoch: float | None, eval_strategy: str | None,
             eval_steps: float | None, prompts: int | None,
             tokens_per_second: float | None, seconds_per_step: float | None,
             frequency: str | None, run_id: str | None, db: str | None,
             as_json: bool) -> None:
    """Estimate what recording predictions costs a run: answers, tokens, time, share."""
    from predwatch.config import PredictionsConfig
    from predwatch.recording.estimate import estimate_cost

    if run_id is None and config_path is None:
        raise click.UsageError("give --config FILE (a plan) or --run RUN (a measured run)")
    if run_id is not None:
        measured = {"--prompts": prompts, "--tokens-per-second": tokens_per_second,
                    "--seconds-per-step": seconds_per_step, "--steps-per-epoch": steps_per_epoch}
        given = [flag for flag, value in measured.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: measured from the run's first "
                                   "evaluation point; not with --run")
    plan: dict[str, Any] = {"num_train_epochs": epochs, "max_steps": max_steps,
                            "eval_strategy": eval_strategy,
            "eval_steps": eval_steps}
    try:
        with _errors():
            if run_id is not None:
                with _store(db) as store:
                    result = _estimate_run(store, run_id, config_path, plan, frequency)
            else:
                config = PredictionsConfig.from_file(config_path)  # type: ignore[arg-type]
                # a set run answers all its items, at most sample_count: the set's size matters
                set_size = (_set_size(config, db) if prompts is None and config.source == "set"
                            else None)
                result = estimate_cost(
                    config, prompts=prompts, steps_per_epoch=steps_per_epoch,
                    tokens_per_second=tokens_per_second, seconds_per_step=seconds_per_step,
                    frequency=frequency, set_size=set_size, **plan,
                )
    except click.ClickException as exc:
        raise click.ClickException(flag_message(exc.message)) from None
    result = result.model_copy(update={"notes": [flag_message(n) for n in result.notes]})
    if as_json:
        _print_json(result)
        return
    _print_estimate(result)


def _estimate_run(store: Any, run_ref: str, config_path: str | None, plan: dict[str, Any],
                  frequency: str | None) -> Any:
    """The run's first point projected over its plan, with the plan flags given winning."""
    from predwatch.config import PredictionsConfig
    from predwatch.errors import DataError
    from predwatch.recording.estimate import estimate_from_point

    run_id = resolve_run(store, run_ref)
    run = store.get_run(run_id)
    points = store.eval_points(run_id)
    if not points:
        raise DataError(f"run {run_id!r} has no evaluation point yet: nothing is measured")
    config = (PredictionsConfig.from_file(config_path) if config_path
              else PredictionsConfig.from_dict(run.config.get("predictions") or {}))
    if frequency is not None:
        config = config.model_copy(update={"sample_frequency": frequency})
    point = points[0]
    args = {**(run.config.get("training_args") or {}),
            **{k: v for k, v in plan.items() if v is not None}}
    if plan["max_steps"] is not None:  # the card's max_steps would win over the flag
        point = point.model_copy(update={"card": {**point.card, "max_steps": plan["max_steps"]}})
    elif plan["num_train_epochs"] is not None:  # a new epoch count replaces the card's steps
        point = point.model_copy(update={"card": {**point.card, "max_steps": None}})
        args.pop("max_steps", None)
    trends = store.trends(run_id)
    mean_tokens = trends[0].avg_completion_tokens if trends else None
    return estimate_from_point(config, point, mean_completion_tokens=mean_tokens,
                               training_args=args)


def _set_size(config: Any, db: str | None) -> int:
    """Items in the config's set: a stored set's version, or a file's items."""
    from predwatch.recording.set_source import is_file_ref
    from predwatch.sets import parse_ref, read_items

    ref = config.set or config.samples_path
    if is_file_ref(ref):
        return len(read_items(ref))
    with _store(db) as store:
        return int(store.get_set_version(*parse_ref(ref)).item_count)


def _print_estimate(e: Any) -> None:
    console = _console()
    rows = [
        ("frequency", e.frequency),
        ("evaluation points", e.points),
        ("answers per point", e.prompts),
        ("answers in the run", e.predictions),
        ("training steps", e.total_steps),
        ("generated tokens (upper bound)", e.generated_tokens),
        ("generated tokens (expected)", e.expected_tokens),
        ("prediction time", f"{e.seconds:.1f}s" if e.seconds is not None else None),
        ("training time", f"{e.training_seconds:.1f}s" if e.training_seconds else None),
        ("share of training time", f"{e.share:.1%}" if e.share is not None else None),
        ("budget", f"{e.budget:.0%}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.print(f"{key:<{width}}  {value if value is not None else '—'}")
    for note in e.notes:
        console.print(f"[dim]note: {note}[/]")
    if e.warning:
        console.print(f"[yellow]warning:[/] {e.warning}")
