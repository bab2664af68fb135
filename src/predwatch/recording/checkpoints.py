"""Checkpoints on disk: which are complete, at which step, with what facts; loading them.

Any framework that saves Hugging Face checkpoints is covered: ``transformers.Trainer`` and TRL
(``checkpoint-N/``), Axolotl (the Trainer's), torchtune's HF checkpointer and plain
``save_pretrained`` (``step-N/``, ``step_N/``), and a final save in the output directory itself.

"Complete" is decided without reading a half-written file:
- the model's files are there (``config.json`` + weights, or ``adapter_config.json`` + adapter
  weights), every shard an index names is there, and every ``.safetensors`` file is as long as
  its own header says (a file still being written is shorter);
- a Trainer checkpoint also has ``trainer_state.json``, which the Trainer writes last;
- nothing in the folder changed (sizes and modification times) over ``settle_s`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predwatch.errors import DataError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^(?:checkpoint|step|global_step)[-_]?(\d+)$")
TRAINER_STATE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# What identifies the weights; optimizer and RNG states do not change the answers.
_HASHED_SUFFIXES = (".safetensors", ".bin")
_HASH_SKIP = ("optimizer", "scheduler", "rng_state", "scaler", "training_args")


@dataclass
class Checkpoint:
    """A checkpoint folder and what is known about it."""

    path: Path
    step: int | None
    epoch: float | None = None
    adapter: bool = False
    complete: bool = False
    problem: str | None = None  # why it is not (yet) complete
    facts: dict[str, Any] = field(default_factory=dict)  # from trainer_state.json


def step_of(path: Path) -> int | None:
    """The step in a checkpoint folder's name (``checkpoint-500`` -> 500), else None."""
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def find_checkpoints(output_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every checkpoint folder under ``output_dir`` (and a final save in it), in step order.

    Completeness here is by files only; ``watch`` adds the settle check (``snapshot``). A final
    save without ``trainer_state.json`` has ``step`` None (its step is unknown).
    """
    root = Path(output_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    found: list[Checkpoint] = []
    for child in root.iterdir():
        step = step_of(child)
        if step is not None and child.is_dir():
            found.append(inspect_checkpoint(child, step))
    if _has_model(root):
        found.append(inspect_checkpoint(root, None))
    return sorted(found, key=lambda c: (c.step is None, c.step or 0))


def inspect_checkpoint(path: Path, step: int | None = None) -> Checkpoint:
    """What the files of one checkpoint say (no settle check)."""
    state = _trainer_state(path)
    trainer_like = path.name.startswith("checkpoint-")
    if state is not None:
        step = int(state.get("global_step", step or 0)) if step is None else step
    ckpt = Checkpoint(
        path=path, step=step, adapter=(path / "adapter_config.json").is_file(),
        epoch=_float(state.get("epoch")) if state else None,
        facts=_state_facts(state) if state else {},
    )
    ckpt.problem = _missing(path, trainer=trainer_like)
    ckpt.complete = ckpt.problem is None
    return ckpt


def snapshot(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of a folder's own files (not its subfolders: an output folder
    holding a final save also holds the checkpoints still being written)."""
    entries = []
    try:
        files = sorted(path.iterdir())
    except FileNotFoundError:  # deleted (save_total_limit)
        return ()
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if f.is_file():
            entries.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(entries)


def weights_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over the checkpoint's weight files and config (names and contents, sorted)."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [
        f for f in sorted(root.iterdir())
        if f.is_file() and (f.suffix in _HASHED_SUFFIXES or f.name in
                            ("config.json", "adapter_config.json"))
        and not f.name.startswith(_HASH_SKIP)
    ]
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def load_model(
    path: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load a full model, or a PEFT adapter onto its base, and the tokenizer (local files only).

    ``base_model`` overrides the adapter's recorded ``base_model_name_or_path`` (a checkpoint
    saved on another machine names a path that is not here). The tokenizer comes from
    ``tokenizer``, else the checkpoint, else the base model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(path)
    kwargs: dict[str, Any] = {"local_files_only": True}
    model: Any
    try:
        if (root / "adapter_config.json").is_file():
            from peft import PeftModel

            base = base_model or json.loads(
                (root / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(base, **kwargs), str(root), is_trainable=False
            )
            fallback_tokenizer = base
        else:
            model = AutoModelForCausalLM.from_pretrained(str(root), **kwargs)
            fallback_tokenizer = None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{root}: cannot load the model: {exc}") from None
    candidates = [c for c in (tokenizer, root, fallback_tokenizer) if c]
    tok = None
    for candidate in candidates:
        try:
            tok = AutoTokenizer.from_pretrained(str(candidate), local_files_only=True)
            break
        except (OSError, ValueError):
            continue
    if tok is None:
        raise DataError(
            f"{root}: no tokenizer found in {', '.join(map(str, candidates))} (pass --tokenizer)"
        )
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model, tok


# --- internals ------------------------------------------------------------------------------


def _has_model(path: Path) -> bool:
    names = {f.name for f in path.iterdir() if f.is_file()}
    return bool(names & {*_WEIGHTS, *_INDEXES, *_ADAPTER_WEIGHTS})


def _missing(path: Path, *, trainer: bool) -> str | None:
    """Why the checkpoint's files are not complete, or None."""
    try:
        names = {f.name for f in path.iterdir() if f.is_file()}
    except FileNotFoundError:
        return "deleted"
    if "adapter_config.json" in names:
        weights = [n for n in _ADAPTER_WEIGHTS if n in names]
        if not weights:
            return "no adapter weights yet"
    else:
        if "config.json" not in names:
            return "no config.json yet"
        weights = [n for n in _WEIGHTS if n in names]
        for index in (n for n in _INDEXES if n in names):
            shards = _shards(path / index)
            if shards is None:
                return f"{index} is not readable yet"
            absent = sorted(shards - names)
            if absent:
                return f"shard {absent[0]} not written yet"
            weights.extend(sorted(shards))
        if not weights:
            return "no weights yet"
    for name in weights:
        if name.endswith(".safetensors") and not _safetensors_complete(path / name):
            return f"{name} is still being written"
    if trainer and TRAINER_STATE not in names:
        return f"no {TRAINER_STATE} yet (the Trainer writes it last)"
    return None


def _shards(index: Path) -> set[str] | None:
    try:
        return set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _safetensors_complete(path: Path) -> bool:
    """A safetensors file is complete when it is exactly as long as its header says."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            (size,) = struct.unpack("<Q", head)
            header = json.loads(fh.read(size))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return bool(path.stat().st_size == 8 + size + max(ends, default=0))
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def _trainer_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _state_facts(state: dict[str, Any]) -> dict[str, Any]:
    """What a point's card keeps from ``trainer_state.json``: where training was, last losses."""
    history = state.get("log_history") or []
    last_loss = next((h.get("loss") for h in reversed(history) if "loss" in h), None)
    last_eval = next((h.get("eval_loss") for h in reversed(history) if "eval_loss" in h), None)
    keep = ("global_step", "epoch", "max_steps", "num_train_epochs", "train_batch_size",
            "best_metric", "best_model_checkpoint")
    facts = {k: state.get(k) for k in keep if state.get(k) is not None}
    if last_loss is not None:
        facts["loss"] = last_loss
    if last_eval is not None:
        facts["eval_loss"] = last_eval
    return facts


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def describe_all(checkpoints: Iterable[Checkpoint]) -> str:
    """One line per checkpoint (for ``watch`` logs)."""
    return "; ".join(
        f"{c.path.name}@{c.step}: {'complete' if c.complete else c.problem}" for c in checkpoints
    )
