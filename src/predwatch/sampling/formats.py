"""Turn one dataset record into a ``Sample``: detect its format, split the prompt from the answer.

Formats, detected per record (keys whose value is null count as absent, so a ``datasets`` row
with columns from several formats reads like the JSON it came from), in this order:

- ``messages``: a chat. The prompt is the conversation up to the final assistant turn (system
  and earlier turns included); that turn's content is the ground truth. With no final assistant
  turn the whole conversation is the prompt and there is no ground truth.
- ``prompt`` with ``completion`` / ``response`` / ``chosen`` (the first present is the truth;
  ``chosen`` makes preference data usable), or ``prompt`` alone (no truth). A ``prompt`` that is a
  list of messages (TRL's conversational format) is used whole as the chat prompt, and a
  ``completion`` that is a list of messages gives its final assistant content as the truth.
- ``instruction`` (+ ``input``) with ``output`` / ``response``: the prompt is the instruction,
  plus ``"\\n\\n"`` and the input when the input is non-empty. Without an output: no truth.
- ``question`` with ``answer`` (or ``question`` alone: no truth).
- ``input`` with ``output`` / ``response``.

Contents that are objects or arrays (structured answers) become canonical JSON text; a list of
``{"type": "text", "text": ...}`` parts becomes its texts joined by newlines; numbers and booleans
become their JSON text. A record in none of these formats raises ``SkipRecord``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from predwatch.errors import DataError
from predwatch.records import Sample, SampleSource, prompt_identity

_MAX_KEYS_IN_REASON = 8


class SkipRecord(DataError):
    """A record that cannot become a sample.

    ``reason`` is short and free of record content, so that selections can count records by it,
    e.g. ``"no known format (keys: label, text)"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedRecord:
    """A record's prompt and answer before it is given an identity (cheap to make and to drop)."""

    prompt: str
    messages: list[dict[str, Any]] | None
    ground_truth: str | None

    def to_sample(
        self,
        source_index: int,
        *,
        source_id: str | None = None,
        sample_source: SampleSource = "dataset",
    ) -> Sample:
        """The ``Sample``, with ``prompt_id`` hashed from the prompt only (never the answer)."""
        return Sample(
            prompt_id=prompt_identity(prompt=self.prompt, messages=self.messages),
            source_index=source_index,
            prompt=self.prompt,
            messages=self.messages,
            ground_truth=self.ground_truth,
            sample_source=sample_source,
            sample_source_id=source_id,
        )


def extract_sample(
    record: Mapping[str, Any],
    source_index: int,
    *,
    source_id: str | None = None,
    sample_source: SampleSource = "dataset",
) -> Sample:
    """Build the ``Sample`` of one record.

    Args:
        record: One dataset row (a JSON object).
        source_index: The record's position in its source.
        source_id: The file name or set name recorded as ``sample_source_id``.
        sample_source: ``"dataset"`` or ``"set"``.

    Raises:
        SkipRecord: The record is in no known format, or its prompt is empty (see ``reason``).
    """
    return parse_record(record).to_sample(
        source_index, source_id=source_id, sample_source=sample_source
    )


def parse_record(record: Mapping[str, Any]) -> ParsedRecord:
    """Detect a record's format and split it into prompt, chat messages and ground truth.

    Raises:
        SkipRecord: As for ``extract_sample``.
    """
    if not isinstance(record, (dict, Mapping)):
        raise SkipRecord(f"not a JSON object (got {type(record).__name__})")
    messages = record.get("messages")
    if messages is not None:
        return _split_chat(_message_list(messages, "messages"))

    prompt = record.get("prompt")
    if prompt is not None:
        truth = _first(record, "completion", "response", "chosen")
        if _looks_like_messages(prompt):
            conversation = _message_list(prompt, "prompt")
            return ParsedRecord(_display_prompt(conversation), conversation, _answer_text(truth))
        return _text_record(prompt, _answer_text(truth))

    instruction = record.get("instruction")
    if instruction is not None:
        text = _text(instruction)
        extra = record.get("input")
        if extra is not None and _text(extra).strip():
            text = f"{text}\n\n{_text(extra)}"
        return _text_record(text, _answer_text(_first(record, "output", "response")))

    question = record.get("question")
    if question is not None:
        return _text_record(question, _answer_text(record.get("answer")))

    answer = _first(record, "output", "response")
    if record.get("input") is not None and answer is not None:
        return _text_record(record["input"], _answer_text(answer))

    raise SkipRecord(f"no known format (keys: {_key_list(record)})")


def _text_record(prompt: Any, truth: str | None) -> ParsedRecord:
    text = _text(prompt)
    if not text.strip():
        raise SkipRecord("empty prompt")
    return ParsedRecord(text, None, truth)


def _split_chat(conversation: list[dict[str, Any]]) -> ParsedRecord:
    """The prompt is everything before the final assistant turn; that turn is the truth."""
    if conversation[-1].get("role") != "assistant":
        return ParsedRecord(_display_prompt(conversation), conversation, None)
    prompt_turns = conversation[:-1]
    if not prompt_turns:
        raise SkipRecord("chat has only an assistant turn")
    truth = conversation[-1].get("content")
    return ParsedRecord(
        _display_prompt(prompt_turns), prompt_turns, None if truth is None else _text(truth)
    )


def _display_prompt(conversation: list[dict[str, Any]]) -> str:
    """What a person reads as the prompt: the last user turn (else the last turn)."""
    for message in reversed(conversation):
        if message.get("role") == "user":
            return _content(message)
    return _content(conversation[-1])


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    return "" if content is None else _text(content)


def _answer_text(value: Any) -> str | None:
    """A ground truth given as text, JSON, or (conversational) a list of assistant messages."""
    if value is None:
        return None
    if _looks_like_messages(value):
        turns = _message_list(value, "completion")
        answers = [m for m in turns if m.get("role") == "assistant"] or turns
        content = answers[-1].get("content")
        return None if content is None else _text(content)
    return _text(value)


def _message_list(value: Any, key: str) -> list[dict[str, Any]]:
    # ``dict``, not ``Mapping``: this runs for every record and JSON and datasets give dicts.
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in value
    ):
        raise SkipRecord(f"'{key}' is not a list of {{role, content}} objects")
    if not value:
        raise SkipRecord(f"'{key}' is empty")
    return [_clean_message(m) for m in value]


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    """Drop null-valued keys, so that a row read through ``datasets`` (which fills missing struct
    fields with None) hashes to the same prompt_id as the JSON line it came from."""
    for value in message.values():
        if value is None or isinstance(value, (dict, list)):
            return _drop_nulls(message)  # type: ignore[no-any-return]
    return message  # the common case: flat strings, nothing to copy


def _looks_like_messages(value: Any) -> bool:
    """A list of turns (or an empty list, reported as such), not a list of text parts."""
    return isinstance(value, list) and (
        not value or (isinstance(value[0], dict) and "role" in value[0])
    )


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _text(value: Any) -> str:
    """Content as text: strings as they are, text parts joined, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "\n".join(p["text"] for p in value)
    # Same shape as records.canonical_json; ``default=str`` keeps dates or bytes from a
    # ``datasets`` row from failing the whole selection.
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None:
            return value
    return None


def _key_list(record: Mapping[str, Any]) -> str:
    keys = sorted(str(k) for k, v in record.items() if v is not None)
    if not keys:
        return "none"
    if len(keys) > _MAX_KEYS_IN_REASON:
        more = len(keys) - _MAX_KEYS_IN_REASON
        return ", ".join(keys[:_MAX_KEYS_IN_REASON]) + f", ... (+{more} more)"
    return ", ".join(keys)
