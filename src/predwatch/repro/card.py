"""Reproducibility facts recorded on every evaluation point's card.

A card (``EvalPoint.card``) is put together by the recorder from three sources:

- ``static_facts()`` (once per run): the git commit of the training script's repository,
  the script, Python, the platform and library versions.
- the generator's ``describe()``: model class, dtype and precision, padding side, tokenizer and
  chat template hashes, adapter name/type/rank under PEFT, device.
- ``point_facts(generator, params)`` (each point): the *effective* generation config, i.e. the
  model's ``generation_config`` merged with predwatch's overrides, plus the seed and batching.

The recorder adds ``generation_params``, ``step``, ``epoch``, ``checkpoint`` and the trainer's
facts (``world_size``, ``max_steps``). ``predwatch regenerate`` reads the card back.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)

LIBRARIES = (
    "predwatch", "torch", "transformers", "tokenizers", "peft", "accelerate", "trl", "datasets",
)


@lru_cache(maxsize=8)
def git_commit(path: str | None = None) -> str | None:
    """The commit of the git repository holding ``path`` (default: the working directory).

    ``-dirty`` is appended when tracked files have uncommitted changes; None outside a
    repository or without git.
    """
    where = path or os.getcwd()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5,
            check=False,
        )
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def script_dir() -> str:
    """The folder of the training script (``sys.argv[0]``) when it is a file, else the cwd."""
    script = sys.argv[0] if sys.argv else ""
    if script and os.path.isfile(script):
        return os.path.dirname(os.path.abspath(script))
    return os.getcwd()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of predwatch and the libraries that shape an answer."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def static_facts() -> dict[str, Any]:
    """Facts that hold for the whole run: code version, platform, libraries."""
    script = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None
    return {
        "git_commit": git_commit(script_dir()),
        "script": script,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "library_versions": library_versions(),
    }


def effective_generation_config(
    generator: Any, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The generation config a generator really uses for ``params``, plus the seed.

    For ``HFGenerator``: the model's ``generation_config`` with predwatch's overrides applied,
    as transformers' ``to_diff_dict()`` (every value that differs from transformers' defaults;
    the card's ``library_versions`` pins those defaults). None for generators without one.
    """
    build = getattr(generator, "_generation_config", None)  # HFGenerator's own merge
    if build is None:
        return None
    from predwatch.generation.base import resolve_params

    resolved = resolve_params(params)
    config = build(resolved)
    merged = dict(config.to_diff_dict())
    merged["seed"] = resolved["seed"]
    return merged


def _batch_size(generator: Any, params: Mapping[str, Any]) -> int | None:
    """The batch size the point ran with: what an unset one resolved to, where a generator says
    (``HFGenerator.batch_size``); else as given."""
    resolve = getattr(generator, "batch_size", None)
    if callable(resolve):
        try:
            return int(resolve(params))
        except Exception:  # noqa: BLE001 - a card is worth less than answers
            pass
    size = params.get("batch_size")
    return int(size) if size else None


def point_facts(generator: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Facts of one evaluation point beyond ``describe()``: the effective generation config,
    batching, and the full library versions. Never raises (a card is worth less than answers)."""
    facts: dict[str, Any] = {
        "batch_size": _batch_size(generator, params),
        "max_batch_tokens": params.get("max_batch_tokens"),
        "library_versions": library_versions(),
    }
    try:
        facts["generation_config"] = effective_generation_config(generator, params)
    except Exception as exc:  # noqa: BLE001 - an odd model config must not cost the answers
        log.warning("predwatch: could not compute the effective generation config: %s", exc)
        facts["generation_config"] = None
    return facts
