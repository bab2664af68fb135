"""Message content as text: text parts kept, other parts (images, audio) counted, tool calls.

A text model reads text only, so a multimodal part (``{"type": "image", ...}``) is left out and
counted by type in a ``Counter`` the caller keeps: the selection reports how many were dropped,
and every evaluation point's card says so. A final assistant turn that calls tools becomes its
calls as canonical JSON (``{"arguments": {...}, "name": ...}``, a list for several), which is
what the ``tool_call`` validator reads.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from predwatch.errors import DataError


class ContentProblem(DataError):
    """Content that cannot become a sample (``reason`` is short and free of record content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_json(value: Any) -> str:
    """Canonical JSON (as ``records.canonical_json``); ``default=str`` keeps dates or bytes from
    a ``datasets`` row from failing the whole selection."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def is_parts(value: Any) -> bool:
    """A list of typed content parts (``[{"type": "text", "text": ...}, {"type": "image"}]``)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in value
    )


def text_of(value: Any, dropped: Counter[str]) -> str:
    """Content as text: strings as they are, text parts joined by newlines (others counted in
    ``dropped``), anything else (a structured answer) as canonical JSON."""
    if isinstance(value, str):
        return value
    if is_parts(value):
        if all(_is_text_part(p) for p in value):
            return "\n".join(p["text"] for p in value)
        if any(p["type"] != "text" for p in value):  # multimodal: keep the text, count the rest
            dropped.update(p["type"] for p in value if p["type"] != "text")
            return "\n".join(p["text"] for p in value if _is_text_part(p))
    return to_json(value)


def text_parts_only(message: dict[str, Any], dropped: Counter[str]) -> dict[str, Any]:
    """The message with its non-text parts left out (the same message when it has none)."""
    content: Any = message.get("content")
    if not is_parts(content) or all(p["type"] == "text" for p in content):
        return message
    dropped.update(p["type"] for p in content if p["type"] != "text")
    kept = [p for p in content if p["type"] == "text"]
    return {**message, "content": kept or ""}


def tool_call_answer(
    calls: Any, tools: list[dict[str, Any]] | None
) -> tuple[str, list[dict[str, Any]]]:
    """The expected answer of a turn that calls tools, and the ``tool_call`` validator spec.

    Raises:
        ContentProblem: ``tool_calls`` is not a list of calls with a name.
    """
    if not isinstance(calls, list) or not calls:
        raise ContentProblem("'tool_calls' is not a non-empty list")
    canonical = [_canonical_call(call) for call in calls]
    spec: dict[str, Any] = {"kind": "tool_call"}
    names = tool_names(tools)
    if names:
        spec["allowed"] = names
    if len(canonical) > 1:
        spec["multiple"] = True
    return to_json(canonical[0] if len(canonical) == 1 else canonical), [spec]


def tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    """The function names a ``tools`` list declares (OpenAI's or the bare shape)."""
    names = []
    for tool in tools or []:
        inner = tool.get("function")
        function: dict[str, Any] = inner if isinstance(inner, dict) else tool
        if isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _canonical_call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    body = function if isinstance(function, dict) else call
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ContentProblem("a tool call has no function name")
    arguments = body.get("arguments", body.get("parameters"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # kept as text: the validator reports it as invalid JSON arguments
    return {"name": body["name"], "arguments": {} if arguments is None else arguments}


def _is_text_part(part: dict[str, Any]) -> bool:
    return part.get("type") == "text" and isinstance(part.get("text"), str)
