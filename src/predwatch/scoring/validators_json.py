"""Built-in validators on structured answers: json_parse, json_schema and tool_call.

Failures say where: a parse error gives line, column and character position; a schema violation
gives the JSON pointer of the offending value (``/items/0/name``); a tool call says which part
failed (``json``, ``shape``, ``name`` or ``arguments``). ``jsonschema`` is imported on first use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from predwatch.scoring.registry import Check, OptionError, ValidationContext, Verdict, validator
from predwatch.scoring.validators_text import clip

_FENCE = "```"
_FENCE_OPENER = re.compile(r"```[ \t]*([^\s`]*)[ \t]*\r?\n")  # the fence, a language tag
_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)  # Hermes / Qwen style
_MESSAGES_SHOWN = 3
_VIOLATIONS_KEPT = 50


class _ParseFailure(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def _parse(text: str, extract_block: bool, tags: bool = False) -> Any:
    """The answer's JSON value: from a fenced block (or a ``<tool_call>`` tag) when asked and
    present, else from the whole answer."""
    payload, where = text, ""
    if extract_block:
        tagged = _TOOL_CALL_TAG.search(text) if tags else None
        block = tagged.group(1) if tagged else _fenced_block(text)
        if block is not None:
            payload, where = block, " in the extracted block"
    if not payload.strip():
        raise _ParseFailure(Verdict(False, f"empty{where or ' answer'}: expected JSON",
                                    {"position": 0}))
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _ParseFailure(Verdict(
            False,
            f"invalid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos})",
            {"error": exc.msg, "line": exc.lineno, "column": exc.colno, "position": exc.pos,
             "extracted_block": bool(where)},
        )) from None


def _fenced_block(text: str) -> str | None:
    """The body of the first fenced block tagged ``json``, else of the first untagged one.

    Fences pair up in order, an opening fence (with its optional language tag) then its
    closing fence, so the closing fence of one block never opens another.
    """
    bare = None
    position = 0
    while (start := text.find(_FENCE, position)) >= 0:
        end = text.find(_FENCE, start + len(_FENCE))
        if end < 0:
            break  # an unclosed fence holds no block
        position = end + len(_FENCE)
        opener = _FENCE_OPENER.match(text, start)
        if opener is None:  # no line break after the fence: not a block's opening
            continue
        language = opener.group(1).lower()
        if language == "json":
            return text[opener.end():end]
        if not language and bare is None:
            bare = text[opener.end():end]
    return bare


@validator("json_parse")
def json_parse(*, extract_block: bool = False) -> Check:
    """The answer is JSON (``extract_block``: the first fenced ```json block, when present)."""

    def check(text: str, context: ValidationContext) -> Verdict:
        try:
            _parse(text, extract_block)
        except _ParseFailure as failure:
            return failure.verdict
        return Verdict(True)

    return check


def json_pointer(path: Any) -> str:
    """RFC 6901 pointer of a path of keys and indexes (``""`` is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _compile_schema(schema: Any, option: str, check_formats: bool = False) -> Any:
    """A jsonschema validator for ``schema`` (its ``$schema`` draft, else 2020-12).

    Every ``$ref`` is resolved here, once: a reference to nothing, or to another document
    (which is never fetched: answers are checked offline, during training), is an OptionError.
    """
    import referencing
    import referencing.jsonschema
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, (dict, bool)):
        raise OptionError(option, "a JSON Schema must be an object")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = json_pointer(exc.path) or "the root"
        raise OptionError(option, f"not a valid JSON Schema at {where}: {exc.message}") from None
    registry: Any = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]
    compiled = cls(schema, registry=registry,
                   format_checker=cls.FORMAT_CHECKER if check_formats else None)
    specification = referencing.jsonschema.specification_with(
        cls.ID_OF(cls.META_SCHEMA) or "urn:unknown-dialect",
        default=referencing.Specification.OPAQUE,
    )
    # The resolver validation itself uses (so the draft's metaschemas resolve as they will).
    _check_refs(specification.create_resource(schema), compiled._resolver, option)
    return compiled


def _never_retrieve(uri: str) -> Any:
    """The registry's retrieve: a schema's references are resolved within the schema only."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class


def _check_refs(resource: Any, resolver: Any, option: str) -> None:
    """Resolve every ``$ref`` in ``resource`` and its subschemas, or raise an OptionError."""
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

    resolver = resolver.in_subresource(resource)  # a subschema's $id changes the base URI
    ref = resource.contents.get("$ref") if isinstance(resource.contents, dict) else None
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except (PointerToNowhere, NoSuchAnchor):
            raise OptionError(
                option, f"$ref {ref!r} points to nothing in the schema") from None
        except Unresolvable:
            raise OptionError(
                option, f"$ref {ref!r} refers to another document, which is never fetched: "
                "put the referenced schema under $defs and refer to it as '#/$defs/<name>'",
            ) from None
    for subresource in resource.subresources():
        _check_refs(subresource, resolver, option)


def _violations(schema_validator: Any, instance: Any) -> tuple[list[dict[str, Any]], int]:
    """The first violations (pointer, message, keyword, schema pointer) and how many in all."""
    errors = sorted(
        schema_validator.iter_errors(instance),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p))
                       for p in e.absolute_path],
    )
    kept = [
        {"pointer": json_pointer(e.absolute_path), "message": clip(e.message, 200),
         "keyword": e.validator, "schema_pointer": json_pointer(e.absolute_schema_path)}
        for e in errors[:_VIOLATIONS_KEPT]
    ]
    return kept, len(errors)


def _summary(violations: list[dict[str, Any]], count: int) -> str:
    shown = "; ".join(f"{v['pointer'] or '(root)'}: {v['message']}"
                      for v in violations[:_MESSAGES_SHOWN])
    more = f"; and {count - _MESSAGES_SHOWN} more" if count > _MESSAGES_SHOWN else ""
    return f"{count} schema violation{'s' if count != 1 else ''}: {shown}{more}"


@validator("json_schema")
def json_schema(
    *,
    schema: dict[str, Any] | None = None,
    schema_path: str | None = None,
    extract_block: bool = False,
    check_formats: bool = False,
) -> Check:
    """The answer is JSON valid against a schema given inline or by file path."""
    if (schema is None) == (schema_path is None):
        raise OptionError("schema", "give exactly one of 'schema' (inline) or 'schema_path'")
    if schema_path is not None:
        schema = _load_schema(schema_path)
    compiled = _compile_schema(schema, "schema" if schema_path is None else "schema_path",
                               check_formats)

    def check(text: str, context: ValidationContext) -> Verdict:
        try:
            instance = _parse(text, extract_block)
        except _ParseFailure as failure:
            return failure.verdict
        violations, count = _violations(compiled, instance)
        if not count:
            return Verdict(True)
        return Verdict(False, _summary(violations, count),
                       {"violations": violations, "count": count})

    return check


def _load_schema(path: str) -> Any:
    try:
        return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError("schema_path", f"{path}: no such file") from None
    except OSError as exc:
        raise OptionError("schema_path", f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise OptionError(
            "schema_path", f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


@validator("tool_call")
def tool_call(
    *,
    allowed: list[str] | None = None,
    schemas: dict[str, dict[str, Any]] | None = None,
    extract_block: bool = True,
    multiple: bool = False,
) -> Check:
    """The answer is a function call: ``{"name", "arguments"}`` (``parameters`` also read) or
    OpenAI's ``{"function": {"name", "arguments"}}`` with arguments as an object or JSON text.

    ``allowed`` limits the names (default: the keys of ``schemas``, else any); ``schemas`` maps a
    name to the JSON Schema of its arguments; ``multiple`` accepts a list of calls.
    """
    compiled = {name: _compile_schema(s, f"schemas.{name}") for name, s in (schemas or {}).items()}
    names = allowed if allowed is not None else (list(compiled) if schemas else None)

    def check(text: str, context: ValidationContext) -> Verdict:
        try:
            value = _parse(text, extract_block, tags=True)
        except _ParseFailure as failure:
            return _failed("json", failure.verdict.message or "", failure.verdict.detail)
        if isinstance(value, list) and not multiple:
            return _failed("shape", f"expected one function call, got a list of {len(value)}")
        calls = value if isinstance(value, list) else [value]
        if not calls:
            return _failed("shape", "expected a function call, got an empty list")
        called = []
        for index, call in enumerate(calls):
            problem = _check_call(call, names, compiled)
            if isinstance(problem, Verdict):
                if len(calls) > 1:
                    problem = Verdict(False, f"call {index}: {problem.message}",
                                      dict(problem.detail, call=index))
                return problem
            called.append(problem)
        return Verdict(True, detail={"names": called})

    return check


def _check_call(call: Any, names: list[str] | None, compiled: dict[str, Any]) -> Any:
    """The called name, or a failed Verdict saying which part is wrong."""
    function = call.get("function") if isinstance(call, dict) else None
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    elif isinstance(call, dict) and "name" in call:
        name, arguments = call.get("name"), call.get("arguments", call.get("parameters"))
    else:
        return _failed("shape", 'not a function call: expected {"name": ..., "arguments": {...}} '
                       'or {"function": {"name": ..., "arguments": ...}}')
    if not isinstance(name, str) or not name:
        return _failed("name", "the function name is missing or not a string")
    if names is not None and name not in names:
        allowed = ", ".join(map(repr, names)) or "none"
        return _failed("name", f"{name!r} is not an allowed function (allowed: {allowed})",
                       {"name": name})
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return _failed("arguments", f"arguments of {name!r} are not valid JSON: {exc.msg} "
                           f"(char {exc.pos})", {"name": name, "position": exc.pos})
    if not isinstance(arguments, dict):
        return _failed("arguments", f"arguments of {name!r} must be an object, got "
                       f"{type(arguments).__name__}", {"name": name})
    if name in compiled:
        violations, count = _violations(compiled[name], arguments)
        if count:
            return _failed("arguments", f"arguments of {name!r}: {_summary(violations, count)}",
                           {"name": name, "violations": violations, "count": count})
    return name


def _failed(part: str, message: str, detail: Any = None) -> Verdict:
    return Verdict(False, message, dict(detail or {}, part=part))
