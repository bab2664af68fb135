"""Every command and option explains itself in ``--help``."""

from __future__ import annotations

import click
from click.testing import CliRunner

from predwatch.cli import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_every_command_and_option_has_help() -> None:
    paths = _commands(main)
    assert ("doctor",) in paths and ("runs", "show") in paths and ("keys", "list") in paths
    missing = []
    for path in paths:
        shown = CliRunner().invoke(main, [*path, "--help"])
        assert shown.exit_code == 0, (path, shown.output)
        command = _command(path)
        if not command.help:
            missing.append(" ".join(path))
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []
