"""The ``predwatch`` command: thin commands over library calls.

Each group of commands lives in its own module and registers itself on ``main``; modules whose
optional dependencies are missing still register, and say which extra to install when run.
"""

from __future__ import annotations

import importlib
import logging

import click

from predwatch import __version__

# Modules that add commands to ``main`` (imported for their side effect).
_COMMAND_MODULES = ("serve", "runs", "keys", "gate", "replay", "sets", "demo", "watch",
                    "doctor")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="predwatch")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def main(verbose: int) -> None:
    """predwatch: record and inspect what a model answers while it is being fine-tuned."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def load_commands() -> click.Group:
    """``main`` with every command group registered (the console script's entry point)."""
    for name in _COMMAND_MODULES:
        importlib.import_module(f"predwatch.cli.{name}")
    return main
