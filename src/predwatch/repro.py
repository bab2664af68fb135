"""Reproducibility facts recorded on every evaluation point's card."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from typing import Any, Optional


@lru_cache(maxsize=1)
def git_commit(path: Optional[str] = None) -> Optional[str]:
    """The commit of the git repository holding ``path`` (default: the working directory)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or os.getcwd(), capture_output=True,
            text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=path or os.getcwd(),
        capture_output=True, text=True, timeout=5, check=False,
    )
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def static_facts() -> dict[str, Any]:
    """Facts that hold for the whole run: code version and platform.

    The distributed world size comes from the integration (``TrainingArguments.world_size``).
    """
    return {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
