"""Built-in validators on plain text: regex, contains, not_contains, equals, one_of, length,
not_truncated, and python (a check of your own, by import path).

Each is a factory: its keyword arguments are the spec's options (checked against the signature
when the spec is built); it returns the check run on every answer.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import json
from collections.abc import Callable
from typing import Any, Literal

import regex as re  # the "regex" package: re's syntax, plus a timeout on matching
from pydantic import NonNegativeInt

from predwatch.scoring.registry import (
    Check,
    CheckReturn,
    OptionError,
    ValidationContext,
    Verdict,
    validator,
)

_CLIP = 80
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "a": re.ASCII}
_MODE_WORDS = {"search": "anywhere", "match": "at the start", "fullmatch": "in full"}
REGEX_TIMEOUT_S = 1.0  # per match attempt: a catastrophic pattern must not stall training


def clip(text: str, limit: int = _CLIP) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut (for messages)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@validator("regex")
def regex(
    *,
    pattern: str,
    mode: Literal["search", "match", "fullmatch", "not_match"] = "search",
    flags: str | list[str] = "",
    strip: bool = True,
) -> Check:
    """The answer matches ``pattern`` (``not_match``: does not match it anywhere).

    Matching uses the ``regex`` package (``re``-compatible syntax) with a time limit of
    ``REGEX_TIMEOUT_S`` per answer; running out of time gives an error result (``error: true``).
    """
    bits = 0
    for letter in "".join(flags).lower():
        if letter not in _FLAGS:
            raise OptionError("flags", f"unknown flag {letter!r}; use any of {''.join(_FLAGS)}")
        bits |= _FLAGS[letter]
    try:
        compiled = re.compile(pattern, bits)
    except re.error as exc:
        raise OptionError("pattern", f"not a valid regular expression: {exc}") from None

    def check(text: str, context: ValidationContext) -> Verdict:
        subject = text.strip() if strip else text
        method = getattr(compiled, "search" if mode == "not_match" else mode)
        timeout = REGEX_TIMEOUT_S
        try:
            found = method(subject, timeout=timeout)
        except TimeoutError:
            # Raised on purpose: the validator's result becomes passed=False, error=True.
            raise TimeoutError(
                f"pattern /{clip(pattern, 40)}/ timed out after {timeout:g} s "
                f"on a {len(subject)}-character answer"
            ) from None
        if mode == "not_match":
            if found is None:
                return Verdict(True)
            return Verdict(
                False,
                f"matches /{pattern}/ at position {found.start()}: {clip(found.group())!r}",
                {"pattern": pattern, "mode": mode, "span": [found.start(), found.end()]},
            )
        if found is not None:
            return Verdict(True)
        return Verdict(
            False, f"does not match /{pattern}/ {_MODE_WORDS[mode]}",
            {"pattern": pattern, "mode": mode},
        )

    return check


def _needles(value: str | None, values: list[str] | None) -> list[str]:
    needles = ([value] if value is not None else []) + list(values or [])
    if not needles:
        raise OptionError("values", "give 'value' (one string) or 'values' (a list)")
    if "" in needles:
        raise OptionError("values", "an empty string is contained in every answer")
    return needles


@validator("contains")
def contains(
    *,
    value: str | None = None,
    values: list[str] | None = None,
    case_sensitive: bool = True,
    match: Literal["all", "any"] = "all",
) -> Check:
    """The answer contains every one (``match: any``: at least one) of the values."""
    needles = _needles(value, values)

    def check(text: str, context: ValidationContext) -> Verdict:
        haystack = text if case_sensitive else text.casefold()
        missing = [n for n in needles if (n if case_sensitive else n.casefold()) not in haystack]
        if match == "all" and missing:
            return Verdict(False, f"missing {_quoted(missing)}", {"missing": missing})
        if match == "any" and len(missing) == len(needles):
            return Verdict(False, f"contains none of {_quoted(needles)}", {"missing": missing})
        return Verdict(True)

    return check


@validator("not_contains")
def not_contains(
    *,
    value: str | None = None,
    values: list[str] | None = None,
    case_sensitive: bool = True,
) -> Check:
    """The answer contains none of the values."""
    needles = _needles(value, values)

    def check(text: str, context: ValidationContext) -> Verdict:
        haystack = text if case_sensitive else text.casefold()
        found = []
        for needle in needles:
            position = haystack.find(needle if case_sensitive else needle.casefold())
            if position >= 0:
                found.append({"value": needle, "position": position})
        if not found:
            return Verdict(True)
        where = ", ".join(f"{f['value']!r} at position {f['position']}" for f in found)
        return Verdict(False, f"contains forbidden {where}", {"found": found})

    return check


@validator("equals")
def equals(*, value: str, strip: bool = True, case_sensitive: bool = True) -> Check:
    """The answer is exactly ``value`` (after stripping, unless ``strip`` is false)."""
    expected = _fold(value, strip, case_sensitive)

    def check(text: str, context: ValidationContext) -> Verdict:
        if _fold(text, strip, case_sensitive) == expected:
            return Verdict(True)
        return Verdict(False, f"expected {clip(value)!r}, got {clip(text)!r}",
                       {"expected": value})

    return check


@validator("one_of")
def one_of(*, values: list[str], strip: bool = True, case_sensitive: bool = True) -> Check:
    """The answer is one of ``values`` (a label from a closed set)."""
    if not values:
        raise OptionError("values", "must list at least one value")
    allowed = {_fold(v, strip, case_sensitive) for v in values}

    def check(text: str, context: ValidationContext) -> Verdict:
        if _fold(text, strip, case_sensitive) in allowed:
            return Verdict(True)
        return Verdict(False, f"{clip(text)!r} is not one of {_quoted(values)}",
                       {"allowed": values})

    return check


@validator("length")
def length(
    *,
    min_chars: NonNegativeInt | None = None,
    max_chars: NonNegativeInt | None = None,
    min_words: NonNegativeInt | None = None,
    max_words: NonNegativeInt | None = None,
    min_tokens: NonNegativeInt | None = None,
    max_tokens: NonNegativeInt | None = None,
) -> Check:
    """The answer's size is within bounds: characters of the stripped text, whitespace-separated
    words, and generated tokens (checked only when the generator counted them)."""
    bounds = {"chars": (min_chars, max_chars), "words": (min_words, max_words),
              "tokens": (min_tokens, max_tokens)}
    if all(low is None and high is None for low, high in bounds.values()):
        raise OptionError("min_chars", "give at least one bound (min_/max_ chars, words, tokens)")
    for unit, (low, high) in bounds.items():
        if low is not None and high is not None and low > high:
            raise OptionError(f"min_{unit}", f"{low} is more than max_{unit} {high}")

    def check(text: str, context: ValidationContext) -> Verdict:
        sizes = {"chars": len(text.strip()), "words": len(text.split()),
                 "tokens": context.completion_tokens}
        violations = []
        for unit, (low, high) in bounds.items():
            size = sizes[unit]
            if size is None:
                continue
            if low is not None and size < low:
                violations.append(f"{size} {unit}, fewer than min_{unit} {low}")
            if high is not None and size > high:
                violations.append(f"{size} {unit}, more than max_{unit} {high}")
        detail = dict(sizes, violations=violations)
        if violations:
            return Verdict(False, "; ".join(violations), detail)
        unchecked = sizes["tokens"] is None and bounds["tokens"] != (None, None)
        return Verdict(True, "token bounds not checked: token count unknown" if unchecked
                       else None, detail)

    return check


@validator("not_truncated")
def not_truncated() -> Check:
    """Generation ended on its own, not at ``max_new_tokens`` (unknown reasons pass)."""

    def check(text: str, context: ValidationContext) -> Verdict:
        if context.finish_reason == "length":
            return Verdict(False, "the answer was cut off at max_new_tokens "
                           "(finish_reason 'length')", {"finish_reason": "length"})
        return Verdict(True)

    return check


@validator("python")
def python(
    *,
    callable: str | Callable[..., Any],  # the spec's option name; shadows the builtin
    options: dict[str, Any] | None = None,
) -> Check:
    """A check of your own: ``"module:function"`` called as ``fn(text, context)`` returning a
    bool, ``(bool, message)`` or ``(bool, message, detail)``; ``options`` reach it as
    ``context.options``."""
    fn = _import_callable(callable) if isinstance(callable, str) else callable
    extra = dict(options or {})

    def check(text: str, context: ValidationContext) -> CheckReturn:
        result = fn(text, dataclasses.replace(context, options=extra))
        if isinstance(result, tuple) and len(result) == 3:
            # Detail is stored as JSON; make anything the user returned fit.
            result = (result[0], result[1], json.loads(json.dumps(result[2], default=str)))
        return result  # type: ignore[no-any-return]

    return check


def _import_callable(path: str) -> Callable[..., Any]:
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise OptionError("callable", f"expected 'module:function', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError("callable", f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise OptionError("callable", f"{module_name!r} has no {attribute!r}") from None
    if not builtins.callable(target):
        raise OptionError("callable", f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


def _fold(text: str, strip: bool, case_sensitive: bool) -> str:
    text = text.strip() if strip else text
    return text if case_sensitive else text.casefold()


def _quoted(values: list[str]) -> str:
    return ", ".join(repr(clip(v, 40)) for v in values)
