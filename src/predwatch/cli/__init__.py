"""The ``predwatch`` command: thin commands over library calls, one module per command group.

``main`` is the click group with every command registered.
"""

from predwatch.cli.main import load_commands as _load_commands

main = _load_commands()

__all__ = ["main"]
