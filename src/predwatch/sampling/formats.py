"""Turn one dataset record into a ``Sample``: detect its format, split the prompt from the answer.

Formats, detected per record (keys whose value is null count as absent, so a ``datasets`` row
with columns from several formats reads like the JSON it came from), in this order:

- ``messages``: a chat. The prompt is the conversation up to the final assistant turn (system
  and earlier turns included); that turn's content is the ground truth. With no final assistant
  turn the whole conversation is the prompt and there is no ground truth. A final turn that
  calls tools (``content: null, tool_calls: [...]``) has its calls as the truth (canonical JSON)
  and gets a ``tool_call`` validator.
- ``conversations`` (ShareGPT: turns of ``from``/``value``, roles ``human``/``gpt``/``system``/
  ``tool``): read as ``messages`` with the roles ``user``/``assistant``/``system``/``tool``.
- ``prompt`` with ``completion`` / ``response`` / ``chosen`` (the first present is the truth;
  ``chosen`` makes preference data usable), or ``prompt`` alone (no truth). A ``prompt`` that is a
  list of messages (TRL's conversational format) is used whole as the chat prompt, and a
  ``completion`` that is a list of messages gives its final assistant content as the truth.
- ``instruction`` (+ ``input``) with ``output`` / ``response``: the prompt is the instruction,
  plus ``"\\n\\n"`` and the input when the input is non-empty. Without an output: no truth.
- ``question`` with ``answer`` (or ``question`` alone: no truth).
- ``input`` with ``output`` / ``response``.

A chat's ``tools`` (a list, or JSON text) and ``chat_template_kwargs`` are kept for the chat
template, as TRL renders them. Any other schema is read through a field mapping (``fields``, see
``sampling.fields``). Contents that are objects or arrays (structured answers) become canonical
JSON text; text parts are joined by newlines and other parts (images, audio) are dropped and
counted (see ``sampling.content``). A record in none of these formats raises ``SkipRecord``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from predwatch.errors import DataError
from predwatch.records import Sample, SampleSource, prompt_identity
from predwatch.sampling.content import (
    ContentProblem,
    text_of,
    text_parts_only,
    to_json,
    tool_call_answer,
)
from predwatch.sampling.fields import MissingField, remap

_MAX_KEYS_IN_REASON = 8
# ShareGPT's roles (and the chat roles some ShareGPT files already use) -> chat roles.
_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "system": "system", "tool": "tool",
}
TEXT_HINT = (
    "; 'text' is pre-formatted text with no prompt/answer split: name the parts with the "
    "config's 'fields' (e.g. {\"prompt\": \"question\", \"completion\": \"answer\"})"
)


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
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    validators: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # content parts left out, by type

    def to_sample(
        self,
        source_index: int,
        *,
        source_id: str | None = None,
        sample_source: SampleSource = "dataset",
    ) -> Sample:
        """The ``Sample``, with ``prompt_id`` hashed from the prompt only (never the answer)."""
        return Sample(
            prompt_id=self.prompt_id(),
            source_index=source_index,
            prompt=self.prompt,
            messages=self.messages,
            ground_truth=self.ground_truth,
            sample_source=sample_source,
            sample_source_id=source_id,
            validators=list(self.validators),
            tools=self.tools,
            chat_template_kwargs=self.chat_template_kwargs,
            dropped_content=dict(self.dropped),
        )

    def prompt_id(self) -> str:
        """The prompt's hash; tools and template kwargs change what the model reads, so they
        are part of it when present (a plain chat keeps the id it always had)."""
        if self.tools is None and not self.chat_template_kwargs:
            return prompt_identity(prompt=self.prompt, messages=self.messages)
        rendered = {"messages": self.messages, "tools": self.tools,
                    "chat_template_kwargs": self.chat_template_kwargs or None}
        return prompt_identity(prompt=to_json(rendered))


def extract_sample(
    record: Mapping[str, Any],
    source_index: int,
    *,
    source_id: str | None = None,
    sample_source: SampleSource = "dataset",
    fields: Mapping[str, str] | None = None,
) -> Sample:
    """Build the ``Sample`` of one record.

    Args:
        record: One dataset row (a JSON object).
        source_index: The record's position in its source.
        source_id: The file name or set name recorded as ``sample_source_id``.
        sample_source: ``"dataset"`` or ``"set"``.
        fields: A field mapping for a custom schema (see ``sampling.fields``).

    Raises:
        SkipRecord: The record is in no known format, or its prompt is empty (see ``reason``).
    """
    return parse_record(record, fields=fields).to_sample(
        source_index, source_id=source_id, sample_source=sample_source
    )


def parse_record(
    record: Mapping[str, Any], *, fields: Mapping[str, str] | None = None
) -> ParsedRecord:
    """Detect a record's format and split it into prompt, chat messages and ground truth.

    Raises:
        SkipRecord: As for ``extract_sample``.
    """
    if not isinstance(record, (dict, Mapping)):
        raise SkipRecord(f"not a JSON object (got {type(record).__name__})")
    system = None
    if fields:
        try:
            record, system = remap(record, fields)
        except MissingField as missing:
            raise SkipRecord(missing.reason) from None
    dropped: Counter[str] = Counter()
    try:
        parsed = _parse(record, dropped)
        if system is not None:
            parsed = _with_system(parsed, text_of(system, dropped))
    except ContentProblem as problem:
        raise SkipRecord(problem.reason) from None
    if dropped:
        parsed = _replace(parsed, dropped=dict(dropped))
    return parsed


def _parse(record: Mapping[str, Any], dropped: Counter[str]) -> ParsedRecord:
    messages = record.get("messages")
    if messages is None and record.get("conversations") is not None:
        messages = record["conversations"]
    if messages is not None:
        key = "messages" if record.get("messages") is not None else "conversations"
        tools, kwargs = _template_inputs(record)
        return _split_chat(_message_list(messages, key, dropped), tools, kwargs, dropped)

    prompt = record.get("prompt")
    if prompt is not None:
        truth = _first(record, "completion", "response", "chosen")
        if _looks_like_messages(prompt):
            tools, kwargs = _template_inputs(record)
            conversation = _message_list(prompt, "prompt", dropped)
            answer, validators = _answer(truth, tools, dropped)
            return _chat_record(conversation, answer, tools, kwargs, validators, dropped)
        return _text_record(prompt, _answer(truth, None, dropped)[0], dropped)

    instruction = record.get("instruction")
    if instruction is not None:
        text = text_of(instruction, dropped)
        extra = record.get("input")
        if extra is not None and text_of(extra, dropped).strip():
            text = f"{text}\n\n{text_of(extra, dropped)}"
        truth = _answer(_first(record, "output", "response"), None, dropped)[0]
        return _text_record(text, truth, dropped)

    question = record.get("question")
    if question is not None:
        return _text_record(question, _answer(record.get("answer"), None, dropped)[0], dropped)

    answer = _first(record, "output", "response")
    if record.get("input") is not None and answer is not None:
        return _text_record(record["input"], _answer(answer, None, dropped)[0], dropped)

    hint = TEXT_HINT if record.get("text") is not None else ""
    raise SkipRecord(f"no known format (keys: {_key_list(record)}){hint}")


def _text_record(prompt: Any, truth: str | None, dropped: Counter[str]) -> ParsedRecord:
    text = text_of(prompt, dropped)
    if not text.strip():
        raise SkipRecord("empty prompt (no text beside the dropped parts)" if dropped
                         else "empty prompt")
    return ParsedRecord(text, None, truth)


def _split_chat(
    conversation: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    kwargs: dict[str, Any] | None,
    dropped: Counter[str],
) -> ParsedRecord:
    """The prompt is everything before the final assistant turn; that turn is the truth."""
    if conversation[-1].get("role") != "assistant":
        return _chat_record(conversation, None, tools, kwargs, [], dropped)
    prompt_turns = conversation[:-1]
    if not prompt_turns:
        raise SkipRecord("chat has only an assistant turn")
    truth, validators = _assistant_answer(conversation[-1], tools, dropped)
    return _chat_record(prompt_turns, truth, tools, kwargs, validators, dropped)


def _chat_record(
    turns: list[dict[str, Any]],
    truth: str | None,
    tools: list[dict[str, Any]] | None,
    kwargs: dict[str, Any] | None,
    validators: list[dict[str, Any]],
    dropped: Counter[str],
) -> ParsedRecord:
    prompt = _display_prompt(turns)
    if dropped and not any(_content(m).strip() for m in turns):
        raise SkipRecord("empty prompt (no text beside the dropped parts)")
    return ParsedRecord(prompt, turns, truth, tools, kwargs, validators)


def _with_system(parsed: ParsedRecord, system: str) -> ParsedRecord:
    """A mapped system text opens the chat (a text prompt becomes a two-turn chat)."""
    turns = parsed.messages or [{"role": "user", "content": parsed.prompt}]
    if turns[0].get("role") == "system":
        return parsed if parsed.messages else _replace(parsed, messages=turns)
    return _replace(parsed, messages=[{"role": "system", "content": system}, *turns])


def _replace(parsed: ParsedRecord, **changes: Any) -> ParsedRecord:
    return replace(parsed, **changes)


def _template_inputs(
    record: Mapping[str, Any],
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """``tools`` and ``chat_template_kwargs`` as TRL reads them (tools may be JSON text)."""
    tools = record.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise SkipRecord("'tools' is text but not valid JSON") from None
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise SkipRecord("'tools' is not a list of tool objects")
    kwargs = record.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise SkipRecord("'chat_template_kwargs' is not an object")
    return tools, kwargs


def _display_prompt(conversation: list[dict[str, Any]]) -> str:
    """What a person reads as the prompt: the last user turn (else the last turn)."""
    for message in reversed(conversation):
        if message.get("role") == "user":
            return _content(message)
    return _content(conversation[-1])


def _content(message: dict[str, Any]) -> str:
    # The turns' parts were counted when they were cleaned: nothing is left to count here.
    content = message.get("content")
    return "" if content is None else text_of(content, Counter())


def _assistant_answer(
    message: dict[str, Any], tools: list[dict[str, Any]] | None, dropped: Counter[str]
) -> tuple[str | None, list[dict[str, Any]]]:
    """An assistant turn's expected answer: its tool calls when it makes any, else its text."""
    calls = message.get("tool_calls")
    if calls is not None:
        return tool_call_answer(calls, tools)
    content = message.get("content")
    return (None if content is None else text_of(content, dropped)), []


def _answer(
    value: Any, tools: list[dict[str, Any]] | None, dropped: Counter[str]
) -> tuple[str | None, list[dict[str, Any]]]:
    """A ground truth given as text, JSON, or (conversational) a list of assistant messages."""
    if value is None:
        return None, []
    if _looks_like_messages(value):
        turns = _message_list(value, "completion", dropped)
        answers = [m for m in turns if m.get("role") == "assistant"] or turns
        return _assistant_answer(answers[-1], tools, dropped)
    return text_of(value, dropped), []


def _message_list(value: Any, key: str, dropped: Counter[str]) -> list[dict[str, Any]]:
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and "role" not in m and "from" in m for m in value
    ):
        value = [_from_sharegpt(m) for m in value]
    # ``dict``, not ``Mapping``: this runs for every record and JSON and datasets give dicts.
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in value
    ):
        raise SkipRecord(f"'{key}' is not a list of {{role, content}} objects")
    if not value:
        raise SkipRecord(f"'{key}' is empty")
    return [text_parts_only(_clean_message(m), dropped) for m in value]


def _from_sharegpt(turn: dict[str, Any]) -> dict[str, Any]:
    speaker = turn.get("from")
    role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        known = ", ".join(r for r in _SHAREGPT_ROLES if r not in ("user", "assistant"))
        raise SkipRecord(f"ShareGPT turn 'from' is {str(speaker)[:20]!r}, not one of {known}")
    rest = {k: v for k, v in turn.items() if k not in ("from", "value")}
    return {"role": role, "content": turn.get("value"), **rest}


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
        not value or (isinstance(value[0], dict) and ("role" in value[0] or "from" in value[0]))
    )


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


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
