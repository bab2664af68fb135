"""The ``Generator`` protocol and the torch-free helpers every generator shares.

A generator turns samples into answers: one ``Generation`` per sample, in the caller's order,
never raising for a single sample (a failed sample gets a row with ``error`` set). ``params`` is
``PredictionsConfig.generation_params()``: ``max_new_tokens``, ``do_sample``, ``temperature``,
``top_p``, ``top_k``, ``num_beams``, ``repetition_penalty``, ``stop_strings``, ``seed``,
``batch_size``, ``max_batch_tokens``. Generators also accept ``min_new_tokens`` (the benchmark
uses it to force answers of a fixed length); missing keys take the ``PredictionsConfig`` defaults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from predwatch.config import PredictionsConfig
from predwatch.records import FinishReason, Generation, Sample

# What a missing key means: PredictionsConfig's default (plus min_new_tokens, unset).
DEFAULT_PARAMS: Mapping[str, Any] = {
    **PredictionsConfig().generation_params(),
    "min_new_tokens": None,
}


@runtime_checkable
class Generator(Protocol):
    """Answers prompts; the seam between the recorder and a model."""

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        """Answer every sample: one ``Generation`` per sample, in the same order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Reproducibility facts: model, precision, tokenizer and template hashes, versions."""
        ...


# ``batch_size`` unset: on the CPU, where memory is rarely the limit, 32 rows per forward beat 16
# on realistic rounds (bench/generation.py, quiet 2-core machine: x1.04 at 64 new tokens, x1.38
# at 128; 48 and 64 gained no more); on an accelerator 16 keeps a round's peak memory what it was.
CPU_BATCH_SIZE = 32
ACCELERATOR_BATCH_SIZE = 16


def default_batch_size(device_type: str) -> int:
    """The batch size an unset ``batch_size`` means for a model on ``device_type``."""
    return CPU_BATCH_SIZE if device_type == "cpu" else ACCELERATOR_BATCH_SIZE


def resolve_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over ``DEFAULT_PARAMS``; ``stop_strings`` always a list of non-empty strings."""
    merged = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None}}
    stops = merged["stop_strings"]
    merged["stop_strings"] = [s for s in ([stops] if isinstance(stops, str) else stops) if s]
    return merged


def plan_batches(
    lengths: Sequence[int],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_batch_tokens: int | None = None,
    num_beams: int = 1,
) -> list[list[int]]:
    """Group sample indices into batches of similar prompt length, longest first.

    Sorting keeps padding (wasted compute) small, and longest-first makes a batch that does not fit
    in memory fail at once rather than at the end. The plan depends only on the lengths and the
    settings, so the same prompts are batched the same way at every evaluation point.

    Args:
        lengths: Prompt length in tokens of each sample.
        max_new_tokens: Tokens to generate per sample.
        batch_size: Samples per batch, when ``max_batch_tokens`` is not set.
        max_batch_tokens: When set, instead of ``batch_size``: the most (padded prompt + new
            tokens) x rows x beams a batch may hold; a sample that alone exceeds it runs alone.
        num_beams: Beams per sample (each is a row of the batch).

    Returns:
        Batches of indices into ``lengths``; together they hold every index once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            if max_batch_tokens is not None:
                width = lengths[current[0]] + max_new_tokens  # current[0] is the longest
                fits = (len(current) + 1) * num_beams * width <= max_batch_tokens
            else:
                fits = len(current) < batch_size
            if not fits:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def sample_seed(seed: int, prompt_id: str, sample_number: int) -> int:
    """The seed of answer ``sample_number`` to prompt ``prompt_id`` when ``num_samples`` answers
    are drawn per prompt: the first 63 bits of sha256("SEED:PROMPT_ID:NUMBER"). It depends on
    nothing else (not the batch, not the other prompts), so one row can be regenerated alone."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}:{sample_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def find_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    """Index in ``text`` of the earliest occurrence of any stop string, or None."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else None


def error_generation(error: BaseException | str, **fields: Any) -> Generation:
    """The row of a sample whose generation failed: ``error`` is ``"Type: message"``."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return Generation(error=text, finish_reason=FinishReason.ERROR, **fields)
