"""Reproduce one recorded answer from a saved checkpoint and say whether it matches.

The answer is regenerated with what the row and its evaluation point's card recorded: the
prompt (or chat), ``generation_params`` (seed, sampling, ``max_new_tokens``, batching) and the
precision. Batch composition can change numerics (padding, batched kernels), so by default the
whole evaluation point is regenerated, its prompts in the recorded order with the recorded batch
size: ``HFGenerator`` then forms exactly the batches (and per-batch seeds) it formed during
training. ``whole_point=False`` regenerates the one prompt alone (faster; greedy answers usually
still match, but not always). With several answers per prompt (``num_samples`` > 1) each answer
was sampled from its own seed (``generation.base.sample_seed``: the run's seed, the prompt and
the sample number), independent of its batch, so one answer alone reproduces too.

The model and tokenizer are loaded with ``from_pretrained(path, local_files_only=True)``: nothing
is downloaded. A PEFT adapter checkpoint (``adapter_config.json``) is loaded over its base model,
which must be available locally too. Differences from the card (tokenizer, chat template,
checkpoint path) are reported as ``warnings``. A point recorded through an OpenAI-compatible
server (``backend: openai`` in its card) is regenerated through that server again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predwatch.analysis.textdiff import word_diff
from predwatch.errors import ConfigError, DataError, NotFound
from predwatch.records import Prediction, Sample
from predwatch.storage.base import Store

log = logging.getLogger(__name__)


@dataclass
class RegenerateResult:
    """A recorded answer next to its regeneration.

    Attributes:
        recorded: The stored answer. regenerated: The answer generated now.
        matches: Whether the two are identical. params: The generation parameters used.
        diff: Word-level differences (``[{op, text}]``; empty when they match).
        warnings: Ways the reproduction differs from the recording (tokenizer, template, ...).
        prompt_count: How many prompts were regenerated to reproduce the batch composition.
    """

    recorded: str
    regenerated: str
    matches: bool
    params: dict[str, Any]
    diff: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prompt_count: int = 1
    error: str | None = None  # the regeneration failed for this prompt


def regenerate(
    store: Store,
    run_id: str,
    step: int,
    prompt_id: str,
    model_path: str | os.PathLike[str],
    *,
    device: str | None = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    whole_point: bool = True,
    backend: str | None = None,
    server_url: str | None = None,
    sample_number: int = 0,
) -> RegenerateResult:
    """Regenerate the answer to ``prompt_id`` at ``step`` of ``run_id`` from a checkpoint.

    Args:
        store: The store holding the run.
        model_path: A local checkpoint directory (e.g. ``output_dir/checkpoint-STEP``).
        device: Where to run (default: the recorded device type when available, else CPU).
        tokenizer_path: Where the tokenizer is, when the checkpoint has none.
        whole_point: Regenerate every prompt of the point in the recorded batches (see above).
        backend: ``hf`` or ``openai``; default: the backend the point was recorded with (its
            card's ``backend``). ``openai`` asks the recorded server (or ``server_url``) for the
            recorded model name, so the answer comes from the same serving engine.
        server_url: The OpenAI-compatible server to use instead of the recorded one.
        sample_number: Which of the prompt's answers (``num_samples`` > 1: 0 .. n-1); each
            was drawn from its own seed (``sample_seed``), which is drawn again here.

    Raises:
        NotFound: No such run, point or prompt. DataError: The checkpoint cannot be loaded.
    """
    from predwatch.analysis.compare import newest_attempts

    rows = newest_attempts(store.point_predictions(run_id, step))
    position = next((i for i, r in enumerate(rows)
                     if r.prompt_id == prompt_id and r.sample_number == sample_number), None)
    if position is None:
        which = f" (sample number {sample_number})" if sample_number else ""
        raise NotFound(f"no answer to prompt {prompt_id!r}{which} at step {step} of run "
                       f"{run_id!r}")
    target = rows[position]
    if target.generation_params.get("do_sample") and target.generation_params.get("seed") is None:
        raise ConfigError("the answer was sampled without a recorded seed: it cannot be reproduced")
    card: dict[str, Any] = next(
        (p.card for p in store.eval_points(run_id) if p.step == step), {}
    )
    if not whole_point:
        rows, position = [target], 0
    params = dict(target.generation_params)
    if (backend or card.get("backend") or "hf") == "openai":
        generator, warnings = _served(card, target, model_path, server_url)
    else:
        model, tokenizer = load_checkpoint(model_path, tokenizer_path, card=card, device=device)
        warnings = _compare_card(card, target, model_path, tokenizer)

        from predwatch.generation.hf import HFGenerator

        generator = HFGenerator(model, tokenizer,
                                precision=target.precision or card.get("precision"))
    try:
        answers = generator.generate([_sample(r) for r in rows], params)
    finally:
        close = getattr(generator, "close", None)  # the HTTP client of a served backend
        if close is not None:
            close()
    answer = answers[position]
    matches = answer.error is None and answer.text == target.prediction
    if target.truncated:
        warnings.append("the recorded answer was cut by the server (truncated); it cannot match")
    return RegenerateResult(
        recorded=target.prediction,
        regenerated=answer.text,
        matches=matches,
        params=params,
        diff=[] if matches else [{"op": p.op, "text": p.text}
                                 for p in word_diff(target.prediction, answer.text)],
        warnings=warnings,
        prompt_count=len(rows),
        error=answer.error,
    )


def _served(
    card: dict[str, Any], row: Prediction, model_path: Any, server_url: str | None
) -> tuple[Any, list[str]]:
    """An ``OpenAIGenerator`` on the recorded server and model, and what differs."""
    from predwatch.generation.openai import OpenAIGenerator

    url = server_url or card.get("server_url")
    if not url:
        raise ConfigError("the point was generated through a server whose URL was not recorded; "
                          "pass server_url")
    model = card.get("model_name") or str(model_path)
    warnings = []
    if server_url and card.get("server_url") and server_url != card["server_url"]:
        warnings.append(f"the answer was generated by the server at {card['server_url']}")
    recorded_checkpoint = row.checkpoint or card.get("checkpoint")
    if recorded_checkpoint and Path(recorded_checkpoint).name != Path(model_path).name:
        warnings.append(f"the answer was recorded with checkpoint {recorded_checkpoint}")
    if card.get("server_version"):
        warnings.append(f"recorded on server version {card['server_version']}: check the "
                        "server still runs it")
    return OpenAIGenerator(url, model), warnings


def load_checkpoint(
    model_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str] | None = None,
    *,
    card: dict[str, Any] | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM (or a PEFT adapter over its base) and its tokenizer from local files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such checkpoint directory")
    card = card or {}
    dtype = getattr(torch, str(card.get("dtype") or ""), None)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if isinstance(dtype, torch.dtype):
        kwargs["dtype"] = dtype
    try:
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(path), **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot load the model: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(Path(tokenizer_path).expanduser() if tokenizer_path else path),
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{tokenizer_path or path}: cannot load the tokenizer ({exc}); pass the tokenizer's "
            "folder (--tokenizer)"
        ) from None
    model.to(_device(device, card.get("device")))
    return model, tokenizer


def _device(requested: str | None, recorded: str | None) -> str:
    import torch

    if requested:
        return requested
    if recorded and recorded.startswith("cuda") and torch.cuda.is_available():
        return "cuda"
    if recorded and recorded.startswith("cuda"):
        log.warning("predwatch: the answer was generated on %s; regenerating on CPU", recorded)
    return "cpu"


def _sample(row: Prediction) -> Sample:
    params = row.generation_params
    seed = None
    if (params.get("num_samples") or 1) > 1 and params.get("seed") is not None:
        from predwatch.generation.base import sample_seed

        seed = sample_seed(int(params["seed"]), row.prompt_id, row.sample_number)
    return Sample(
        prompt_id=row.prompt_id, source_index=row.source_index or 0, prompt=row.prompt,
        messages=row.messages, ground_truth=row.ground_truth, seed=seed,
    )


def _compare_card(
    card: dict[str, Any], row: Prediction, model_path: Any, tokenizer: Any
) -> list[str]:
    from predwatch.generation.hf import tokenizer_hash

    warnings = []
    if card.get("tokenizer_hash") and card["tokenizer_hash"] != tokenizer_hash(tokenizer):
        warnings.append("the tokenizer differs from the one recorded (tokenizer_hash)")
    template = getattr(tokenizer, "chat_template", None)
    recorded_template = row.chat_template_hash or card.get("chat_template_hash")
    if recorded_template and isinstance(template, str):
        import hashlib

        if hashlib.sha256(template.encode("utf-8")).hexdigest() != recorded_template:
            warnings.append("the chat template differs from the one recorded")
    recorded_checkpoint = row.checkpoint or card.get("checkpoint")
    if recorded_checkpoint and Path(recorded_checkpoint).name != Path(model_path).name:
        warnings.append(f"the answer was recorded with checkpoint {recorded_checkpoint}")
    if not recorded_checkpoint:
        warnings.append("no checkpoint was saved at this step: the weights may differ")
    return warnings
