"""Build validators from spec dicts and run them on an answer.

A spec is ``{"kind": <registered name>, "name": <optional label>, **options}``. Specs are built
once and cached by their canonical JSON, so per-item specs cost a dict lookup per answer. A bad
spec raises ``ConfigError`` naming the spec's index, kind and option; a validator that raises
while checking an answer is recorded as a failed result with ``error=True`` and never propagates.
The built-in kinds live in ``validators_text`` and ``validators_json``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, ValidationError, validate_call

from predwatch.errors import ConfigError
from predwatch.records import ValidationIssue, ValidatorResult, canonical_json
from predwatch.scoring.registry import (
    VALIDATORS,
    Check,
    CheckReturn,
    OptionError,
    ValidationContext,
    ValidatorFactory,
    Verdict,
)

logger = logging.getLogger(__name__)

_RESERVED = ("kind", "name")
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class BuiltValidator:
    """A validator ready to run: its kind, its label and the check built from its options."""

    kind: str
    name: str | None
    check: Check = field(repr=False)

    @property
    def label(self) -> str:
        """The spec's ``name`` when given, else its kind."""
        return self.name or self.kind

    def __call__(self, text: str, context: ValidationContext) -> ValidatorResult:
        """Run the check; an exception becomes a failed result with ``error=True``."""
        try:
            verdict = as_verdict(self.check(text, context))
        except Exception as exc:  # a validator must never break the recording of an answer
            key = (self.label, type(exc).__name__)
            if key not in _warned:  # once per validator and error type, not once per answer
                _warned.add(key)
                logger.warning("validator %r raised; recorded as failed", self.label,
                               exc_info=True)
            return ValidatorResult(
                validator=self.kind, name=self.name, passed=False, error=True,
                message=f"{type(exc).__name__}: {exc}",
            )
        return ValidatorResult(
            validator=self.kind, name=self.name, passed=verdict.passed,
            message=verdict.message, detail=verdict.detail,
        )


@dataclass(frozen=True)
class ValidationOutcome:
    """The validation fields of a prediction.

    Attributes:
        validation_pass: Whether every validator passed; None when there are none.
        validation_kind: The kinds run, in spec order without repeats, joined by ``+``.
        validation_errors: One issue per failed validator (``validator`` is its label).
        results: Every validator's full result, in spec order.
    """

    validation_pass: bool | None = None
    validation_kind: str | None = None
    validation_errors: list[ValidationIssue] = field(default_factory=list)
    results: list[ValidatorResult] = field(default_factory=list)


def as_verdict(value: CheckReturn) -> Verdict:
    """A check's answer as a ``Verdict``: a Verdict, a bool, (bool, message) or
    (bool, message, detail)."""
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool):
        return Verdict(value)
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], bool):
        message = None if value[1] is None else str(value[1])
        return Verdict(value[0], message, value[2] if len(value) == 3 else None)
    raise TypeError(
        f"a validator returned {type(value).__name__}; expected a bool, (bool, message), "
        "(bool, message, detail) or a Verdict"
    )


def build_validators(
    specs: Sequence[Mapping[str, Any] | BuiltValidator],
) -> list[BuiltValidator]:
    """Build (or fetch from the cache) the validator of every spec.

    Raises:
        ConfigError: A spec is not an object, has no or an unknown ``kind``, or a bad option;
            the message names the spec's index, its kind and the option.
    """
    built = []
    for index, spec in enumerate(specs):
        if isinstance(spec, BuiltValidator):
            built.append(spec)
            continue
        try:
            built.append(_build_spec(spec))
        except _SpecProblem as problem:
            raise problem.config_error(index) from None
    return built


def run_validators(
    text: str,
    specs: Sequence[Mapping[str, Any] | BuiltValidator],
    *,
    finish_reason: str | None = None,
    completion_tokens: int | None = None,
    ground_truth: str | None = None,
) -> ValidationOutcome:
    """Run every validator on one answer.

    Args:
        text: The answer.
        specs: Validator specs (or validators from ``build_validators``).
        finish_reason: Why generation stopped (``not_truncated`` uses it).
        completion_tokens: Tokens generated (``length``'s token bounds use it).
        ground_truth: The expected answer, passed to checks in their context.

    Raises:
        ConfigError: A spec is bad (see ``build_validators``).
    """
    validators = build_validators(specs)
    if not validators:
        return ValidationOutcome()
    context = ValidationContext(
        finish_reason=getattr(finish_reason, "value", finish_reason),
        completion_tokens=completion_tokens,
        ground_truth=ground_truth,
    )
    results = [validator(text, context) for validator in validators]
    issues = [
        ValidationIssue(validator=r.name or r.validator, message=r.message or "failed",
                        detail=r.detail)
        for r in results
        if not r.passed
    ]
    return ValidationOutcome(
        validation_pass=not issues,
        validation_kind="+".join(dict.fromkeys(v.kind for v in validators)),
        validation_errors=issues,
        results=results,
    )


class _SpecProblem(Exception):
    def __init__(self, kind: str | None, problems: list[tuple[str | None, str]]) -> None:
        super().__init__(kind, problems)
        self.kind = kind
        self.problems = problems  # (option or None, reason)

    def config_error(self, index: int) -> ConfigError:
        where = f"validator {index}" + (f" ({self.kind})" if self.kind else "")
        lines = [f"option {option!r}: {reason}" if option else reason
                 for option, reason in self.problems]
        return ConfigError(
            f"{where}: {'; '.join(lines)}",
            detail=[
                {"field": f"validators[{index}]" + (f".{option}" if option else ""),
                 "reason": reason}
                for option, reason in self.problems
            ],
        )


def _build_spec(spec: Any) -> BuiltValidator:
    if not isinstance(spec, Mapping):
        raise _SpecProblem(None, [(None, f"expected an object with 'kind', got {spec!r}")])
    try:
        key = canonical_json(spec)
    except (TypeError, ValueError):  # e.g. a python validator given a function object
        return _build_uncached(spec)
    return _build_cached(key, VALIDATORS.version)


@functools.lru_cache(maxsize=1024)
def _build_cached(key: str, registry_version: int) -> BuiltValidator:
    # registry_version is part of the key: re-registering a kind invalidates what was built.
    return _build_uncached(json.loads(key))


def _build_uncached(spec: Mapping[str, Any]) -> BuiltValidator:
    kind, name = spec.get("kind"), spec.get("name")
    if not isinstance(kind, str) or not kind:
        raise _SpecProblem(None, [("kind", "missing: every validator spec needs a 'kind'")])
    if name is not None and not isinstance(name, str):
        raise _SpecProblem(kind, [("name", "must be a string (a label for this validator)")])
    try:
        factory = VALIDATORS.get(kind)
    except ConfigError as exc:
        raise _SpecProblem(kind, [("kind", exc.message)]) from None
    options = {k: v for k, v in spec.items() if k not in _RESERVED}
    try:
        check = _validating(factory)(**options)
    except ValidationError as exc:
        raise _SpecProblem(kind, [_pydantic_problem(err) for err in exc.errors()]) from None
    except OptionError as exc:
        raise _SpecProblem(kind, [(exc.option, exc.reason)]) from None
    except (TypeError, ValueError) as exc:  # a plugin factory rejecting its options its own way
        raise _SpecProblem(kind, [(None, f"{type(exc).__name__}: {exc}")]) from None
    return BuiltValidator(kind=kind, name=name, check=check)


@functools.cache
def _validating(factory: ValidatorFactory) -> ValidatorFactory:
    """The factory with its options checked against its signature (types, required, unknown)."""
    try:
        return validate_call(config=ConfigDict(arbitrary_types_allowed=True))(factory)
    except Exception:  # noqa: BLE001 - a signature pydantic cannot read: call it unchecked
        return factory


def _pydantic_problem(error: Mapping[str, Any]) -> tuple[str | None, str]:
    option = ".".join(str(p) for p in error["loc"]) or None
    if error["type"] == "unexpected_keyword_argument":
        return option, "unknown option (check the spelling)"
    if error["type"] == "missing_keyword_only_argument":
        return option, "required"
    return option, str(error["msg"]).removeprefix("Value error, ")
