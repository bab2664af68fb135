"""``FakeGenerator``: a deterministic generator for testing pipelines and scorers, no model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from predwatch.generation.base import error_generation, find_stop, resolve_params
from predwatch.records import FinishReason, Generation, Sample

Answer = Callable[[Sample], str] | Mapping[str, str] | None


class FakeGenerator:
    """Answers from a function or a table, following ``stop_strings`` and ``max_new_tokens``.

    Tokens are whitespace-separated words: ``prompt_tokens`` counts the words of ``sample.prompt``,
    ``completion_tokens`` those of the answer; an answer longer than ``max_new_tokens`` words is
    cut there (finish reason ``length``), one containing a stop string is cut before it
    (``stop``), any other ends with ``eos``. ``latency_ms`` is 0.

    Args:
        answer: A function of the sample; or a mapping looked up by ``prompt_id``, then by
            ``prompt`` (a miss answers ""); or None to answer the ground truth ("" when none),
            i.e. a perfect model.
        fail_on: Samples for which generation fails: their rows get ``error`` set.

    Attributes:
        calls: The ``prompt_id``s of each ``generate()`` call, in order.
    """

    def __init__(
        self, answer: Answer = None, fail_on: Callable[[Sample], bool] | None = None
    ) -> None:
        self._answer = answer
        self._fail_on = fail_on
        self.calls: list[list[str]] = []

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        """Answer every sample; one ``Generation`` per sample, in the order given."""
        p = resolve_params(params)
        self.calls.append([s.prompt_id for s in samples])
        return [self._one(sample, p) for sample in samples]

    def describe(self) -> dict[str, Any]:
        """Facts in the shape ``HFGenerator.describe()`` gives, for a model that is not one."""
        return {
            "model_name": "fake",
            "model_class": type(self).__name__,
            "precision": None,
            "tokenizer_hash": None,
            "chat_template_hash": None,
            "library_versions": {},
        }

    def _one(self, sample: Sample, p: Mapping[str, Any]) -> Generation:
        prompt_tokens = len(sample.prompt.split())
        if self._fail_on is not None and self._fail_on(sample):
            error = RuntimeError(f"FakeGenerator fails on prompt {sample.prompt_id[:12]}")
            return error_generation(error, prompt_tokens=prompt_tokens)
        text = self._text(sample)
        reason = FinishReason.EOS
        cut = find_stop(text, p["stop_strings"])
        if cut is not None:
            text, reason = text[:cut], FinishReason.STOP
        words = text.split()
        if len(words) > p["max_new_tokens"]:
            text, reason = " ".join(words[: p["max_new_tokens"]]), FinishReason.LENGTH
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(text.split()),
            latency_ms=0.0,
            finish_reason=reason,
        )

    def _text(self, sample: Sample) -> str:
        if self._answer is None:
            return sample.ground_truth or ""
        if callable(self._answer):
            return self._answer(sample)
        return self._answer.get(sample.prompt_id, self._answer.get(sample.prompt, ""))
