"""Every validator kind passing and failing, bad specs, raising validators, entry points."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from predwatch.config import PredictionsConfig
from predwatch.errors import ConfigError
from predwatch.records import FinishReason, ValidationIssue
from predwatch.scoring import (
    ValidationContext,
    available_validators,
    build_validators,
    registry,
    run_validators,
    validators_text,
)
from predwatch.scoring.registry import VALIDATOR_GROUP, VALIDATORS

ITEMS_SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string"}}},
        }
    },
}
WEATHER_SCHEMA = {"type": "object", "required": ["city"],
                  "properties": {"city": {"type": "string"}}}


def check(text: str, spec: dict[str, Any], **context: Any) -> tuple[bool, str | None, Any]:
    """Run one validator; its (passed, message, detail)."""
    outcome = run_validators(text, [spec], **context)
    [result] = outcome.results
    assert not result.error, result.message
    return result.passed, result.message, result.detail


# --- json_parse -----------------------------------------------------------------------------


def test_json_parse_passes_on_json_and_reports_line_column_and_position() -> None:
    assert check('{"a": [1, 2]}', {"kind": "json_parse"})[0]
    # line 2 is ' "b": }': the value is missing at column 7; line 1 plus its newline is
    # 9 characters, so the position is 9 + 6 = 15
    passed, message, detail = check('{"a": 1,\n "b": }', {"kind": "json_parse"})
    assert not passed
    assert message == "invalid JSON: Expecting value at line 2 column 7 (char 15)"
    assert (detail["line"], detail["column"], detail["position"]) == (2, 7, 15)


def test_json_parse_takes_the_fenced_block_only_when_asked() -> None:
    text = 'Here you go:\n```json\n{"a": 1}\n```\nAnything else?'
    assert check(text, {"kind": "json_parse", "extract_block": True})[0]
    passed, message, _ = check(text, {"kind": "json_parse"})
    assert not passed and message == "invalid JSON: Expecting value at line 1 column 1 (char 0)"
    broken = "```json\n{oops}\n```"
    passed, message, detail = check(broken, {"kind": "json_parse", "extract_block": True})
    assert message.startswith("invalid JSON in the extracted block: Expecting property name")
    assert detail["extracted_block"] is True


@pytest.mark.parametrize(
    "text",
    [
        # the closing fence of the python block must not open a block around the prose
        'Code:\n```python\nprint(1)\n```\nSome prose\n```\n{"a": 1}\n```\n',
        # a json block wins over an earlier untagged one
        '```\nnot json\n```\nthen\n```JSON\n{"a": 1}\n```',
        '```\n{"a": 1}\n```\nand\n```\nnot json\n```',
    ],
)
def test_extract_block_pairs_fences_and_prefers_json_then_untagged(text: str) -> None:
    passed, message, _ = check(text, {"kind": "json_parse", "extract_block": True})
    assert passed, message


def test_json_parse_fails_on_an_empty_answer() -> None:
    assert check("  ", {"kind": "json_parse"})[:2] == (False, "empty answer: expected JSON")


# --- json_schema ----------------------------------------------------------------------------


def test_json_schema_reports_each_violation_with_its_json_pointer() -> None:
    spec = {"kind": "json_schema", "schema": ITEMS_SCHEMA}
    assert check('{"items": [{"name": "a"}]}', spec)[0]
    passed, message, detail = check('{"items": [{"name": 5}, {}]}', spec)
    assert not passed
    assert [(v["pointer"], v["keyword"]) for v in detail["violations"]] == [
        ("/items/0/name", "type"), ("/items/1", "required")]
    assert message == ("2 schema violations: /items/0/name: 5 is not of type 'string'; "
                       "/items/1: 'name' is a required property")


def test_json_schema_parses_first_with_the_same_extraction(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(ITEMS_SCHEMA), encoding="utf-8")
    spec = {"kind": "json_schema", "schema_path": str(path), "extract_block": True}
    assert check('```json\n{"items": []}\n```', spec)[0]
    passed, message, _ = check("```json\n{items: []}\n```", spec)
    assert not passed and message.startswith("invalid JSON in the extracted block")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"kind": "json_schema", "schema": {"type": "nope"}},
         "validator 0 (json_schema): option 'schema': not a valid JSON Schema at /type"),
        ({"kind": "json_schema"},
         ("validator 0 (json_schema): option 'schema': give exactly one of 'schema' (inline) "
          "or 'schema_path'")),
        ({"kind": "json_schema", "schema_path": "/no/such/schema.json"},
         "validator 0 (json_schema): option 'schema_path': /no/such/schema.json: no such file"),
    ],
)
def test_bad_schemas_are_config_errors_at_build_time(spec: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match="^" + _escape(expected)):
        build_validators([spec])


def test_json_schema_local_refs_resolve() -> None:
    defs = {"$defs": {"name": {"type": "string"}},
            "properties": {"name": {"$ref": "#/$defs/name"}}}
    assert check('{"name": "a"}', {"kind": "json_schema", "schema": defs})[0]
    passed, message, _ = check('{"name": 5}', {"kind": "json_schema", "schema": defs})
    assert not passed and message == "1 schema violation: /name: 5 is not of type 'string'"
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#",
              "definitions": {"name": {"type": "string"}},
              "properties": {"name": {"$ref": "#/definitions/name"}}}
    assert not check('{"name": 5}', {"kind": "json_schema", "schema": draft7})[0]


def test_json_schema_ref_to_nothing_is_a_config_error_at_build_time() -> None:
    spec = {"kind": "json_schema",
            "schema": {"properties": {"a": {"$ref": "#/$defs/missing"}}}}
    with pytest.raises(ConfigError, match=_escape(
            "validator 0 (json_schema): option 'schema': $ref '#/$defs/missing' points to "
            "nothing in the schema")):
        build_validators([spec])


def test_json_schema_remote_ref_is_a_config_error_and_is_never_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched: list[Any] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: fetched.append(a))
    spec = {"kind": "json_schema", "schema": {"$ref": "http://example.com/s.json"}}
    with pytest.raises(ConfigError, match=_escape(
            "validator 0 (json_schema): option 'schema': $ref 'http://example.com/s.json' "
            "refers to another document, which is never fetched")):
        build_validators([spec])
    tool_spec = {"kind": "tool_call", "schemas": {"f": {"$ref": "https://example.com/f.json"}}}
    with pytest.raises(ConfigError, match=_escape("option 'schemas.f': $ref")):
        build_validators([tool_spec])
    assert fetched == []


# --- text kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "passes"),
    [
        ({"pattern": r"\d+"}, "answer: 42", True),
        ({"pattern": r"\d+", "mode": "match"}, "answer: 42", False),
        ({"pattern": r"\d+", "mode": "fullmatch"}, " 42\n", True),  # stripped by default
        ({"pattern": r"\d+", "mode": "fullmatch", "strip": False}, " 42\n", False),
        ({"pattern": "^yes$", "flags": "im"}, "maybe\nYES", True),
        ({"pattern": "sorry", "mode": "not_match", "flags": "i"}, "All good", True),
    ],
)
def test_regex_modes_and_flags(spec: dict, text: str, passes: bool) -> None:
    assert check(text, {"kind": "regex", **spec})[0] is passes


def test_regex_failure_messages_say_what_did_not_match() -> None:
    assert check("abc", {"kind": "regex", "pattern": r"\d+", "mode": "fullmatch"})[1] == (
        r"does not match /\d+/ in full")
    passed, message, detail = check("I am Sorry.", {"kind": "regex", "pattern": "sorry",
                                                    "mode": "not_match", "flags": "i"})
    assert not passed
    assert message == "matches /sorry/ at position 5: 'Sorry'"
    assert detail["span"] == [5, 10]


def test_regex_with_catastrophic_backtracking_returns_quickly() -> None:
    # Python's re takes seconds here, doubling per extra "a"; the regex engine does not.
    started = time.monotonic()
    outcome = run_validators("a" * 26 + "!", [{"kind": "regex", "pattern": "^(a+)+$"}])
    assert time.monotonic() - started < 1.0
    [result] = outcome.results
    assert (result.passed, result.error) == (False, False)


def test_regex_that_runs_out_of_time_is_an_error_result_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validators_text, "REGEX_TIMEOUT_S", 0.2)
    started = time.monotonic()
    outcome = run_validators("a" * 40 + "!", [{"kind": "regex", "pattern": "^(a|aa)+$"},
                                              {"kind": "contains", "value": "a"}])
    assert time.monotonic() - started < 2.0
    timed_out, fine = outcome.results
    assert (timed_out.passed, timed_out.error) == (False, True)
    assert timed_out.message == (
        "TimeoutError: pattern /^(a|aa)+$/ timed out after 0.2 s on a 41-character answer")
    assert fine.passed and outcome.validation_pass is False


def test_contains_and_not_contains() -> None:
    assert check("The capital is Paris.", {"kind": "contains", "value": "Paris"})[0]
    assert check("paris", {"kind": "contains", "value": "Paris"})[1] == "missing 'Paris'"
    assert check("paris", {"kind": "contains", "value": "Paris", "case_sensitive": False})[0]
    # case-insensitive comparison folds case fully, as equals and one_of do: ß is "ss"
    assert check("STRASSE", {"kind": "contains", "value": "Straße", "case_sensitive": False})[0]
    assert not check("Die Straße", {"kind": "not_contains", "value": "STRASSE",
                                    "case_sensitive": False})[0]
    spec = {"kind": "contains", "values": ["a", "b", "c"]}
    assert check("a c", spec)[1] == "missing 'b'"
    assert check("a c", dict(spec, match="any"))[0]
    assert check("xyz", dict(spec, match="any"))[1] == "contains none of 'a', 'b', 'c'"
    forbidden = {"kind": "not_contains", "values": ["As an AI", "cannot"]}
    assert check("Sure: 4.", forbidden)[0]
    passed, message, detail = check("As an AI I cannot", forbidden)
    assert not passed
    assert message == "contains forbidden 'As an AI' at position 0, 'cannot' at position 11"
    assert detail == {"found": [{"value": "As an AI", "position": 0},
                                {"value": "cannot", "position": 11}]}


def test_equals_and_one_of() -> None:
    assert check(" Paris\n", {"kind": "equals", "value": "Paris"})[0]
    assert (check("paris", {"kind": "equals", "value": "Paris"})[1]
            == "expected 'Paris', got 'paris'")
    assert check("PARIS", {"kind": "equals", "value": "Paris", "case_sensitive": False})[0]
    assert not check(" Paris", {"kind": "equals", "value": "Paris", "strip": False})[0]
    labels = {"kind": "one_of", "values": ["positive", "negative"]}
    assert check("negative\n", labels)[0]
    assert check("neutral", labels)[1] == "'neutral' is not one of 'positive', 'negative'"


def test_length_bounds_on_chars_words_and_tokens() -> None:
    spec = {"kind": "length", "min_words": 2, "max_chars": 10, "max_tokens": 5}
    assert check("two words", spec, completion_tokens=3)[0]
    passed, message, detail = check("one", spec, completion_tokens=9)
    assert not passed
    assert message == "1 words, fewer than min_words 2; 9 tokens, more than max_tokens 5"
    assert detail == {"chars": 3, "words": 1, "tokens": 9, "violations": detail["violations"]}
    assert check("far too many characters", spec)[1] == "23 chars, more than max_chars 10"
    # no token count: token bounds are not checked, and the result says so
    assert check("two words", spec)[:2] == (
        True, "token bounds not checked: token count unknown")


def test_not_truncated_fails_only_when_generation_hit_the_length_limit() -> None:
    spec = {"kind": "not_truncated"}
    assert check("done.", spec, finish_reason="eos")[0]
    assert check("done.", spec)[0]  # unknown: cannot prove truncation
    passed, message, _ = check("and then the", spec, finish_reason="length")
    assert not passed and "cut off at max_new_tokens" in message
    assert not check("and then the", spec, finish_reason=FinishReason.LENGTH)[0]


# --- tool_call ------------------------------------------------------------------------------

TOOLS = {"kind": "tool_call", "schemas": {"get_weather": WEATHER_SCHEMA}}


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        ('{"type": "function", "function": {"name": "get_weather", '
         '"arguments": "{\\"city\\": \\"Oslo\\"}"}}'),
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        'Calling:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```',
    ],
)
def test_tool_call_accepts_the_common_call_shapes(text: str) -> None:
    passed, message, detail = check(text, TOOLS)
    assert passed, message
    assert detail == {"names": ["get_weather"]}


@pytest.mark.parametrize(
    ("text", "part", "message"),
    [
        ("get_weather(Oslo)", "json", "invalid JSON: Expecting value at line 1 column 1"),
        ('{"city": "Oslo"}', "shape", "not a function call"),
        ('{"name": "rm_rf", "arguments": {}}', "name",
         "'rm_rf' is not an allowed function (allowed: 'get_weather')"),
        ('{"name": "get_weather", "arguments": {"city": 5}}', "arguments",
         "arguments of 'get_weather': 1 schema violation: /city: 5 is not of type 'string'"),
        ('{"function": {"name": "get_weather", "arguments": "{city"}}', "arguments",
         "arguments of 'get_weather' are not valid JSON"),
        ('{"name": "get_weather", "arguments": [1]}', "arguments",
         "arguments of 'get_weather' must be an object, got list"),
        ('[{"name": "get_weather", "arguments": {"city": "Oslo"}}]', "shape",
         "expected one function call, got a list of 1"),
    ],
)
def test_tool_call_reports_which_part_failed(text: str, part: str, message: str) -> None:
    passed, actual, detail = check(text, TOOLS)
    assert not passed
    assert detail["part"] == part
    assert actual.startswith(message), actual


def test_tool_call_multiple_calls_and_allowed_names() -> None:
    spec = {"kind": "tool_call", "allowed": ["a", "b"], "multiple": True}
    assert check('[{"name": "a", "arguments": {}}, {"name": "b"}]', spec)[2] == {
        "names": ["a", "b"]}
    passed, message, detail = check('[{"name": "a"}, {"name": "c"}]', spec)
    assert not passed
    assert message == "call 1: 'c' is not an allowed function (allowed: 'a', 'b')"
    assert (detail["call"], detail["part"]) == (1, "name")


# --- python ---------------------------------------------------------------------------------


def starts_politely(text: str, context: ValidationContext) -> Any:
    word = context.options.get("word", "Please")
    return text.startswith(word), f"does not start with {word!r}"


def answers_truth(text: str, context: ValidationContext) -> bool:
    return text == context.ground_truth


def explodes(text: str, context: ValidationContext) -> bool:
    raise RuntimeError(f"cannot judge {text!r}")


def returns_nonsense(text: str, context: ValidationContext) -> Any:
    return "yes"


def test_python_validator_gets_text_and_context() -> None:
    spec = {"kind": "python", "callable": f"{__name__}:starts_politely",
            "options": {"word": "Dear"}}
    assert check("Dear team", spec)[0]
    assert check("Hi team", spec)[:2] == (False, "does not start with 'Dear'")
    truth_spec = {"kind": "python", "callable": f"{__name__}:answers_truth"}
    assert check("4", truth_spec, ground_truth="4")[:2] == (True, None)
    assert not check("5", truth_spec, ground_truth="4")[0]


@pytest.mark.parametrize("function", ["explodes", "returns_nonsense"])
def test_a_validator_that_raises_is_recorded_as_failed_and_never_propagates(
    function: str,
) -> None:
    outcome = run_validators("text", [{"kind": "python", "callable": f"{__name__}:{function}"},
                                      {"kind": "contains", "value": "text"}])
    broken, fine = outcome.results
    assert (broken.passed, broken.error) == (False, True)
    assert fine.passed
    assert outcome.validation_pass is False
    if function == "explodes":
        assert broken.message == "RuntimeError: cannot judge 'text'"
    else:
        assert broken.message.startswith("TypeError: a validator returned str")


# --- specs and outcomes ---------------------------------------------------------------------


def test_no_validators_give_no_verdict() -> None:
    outcome = run_validators("anything", [])
    assert (outcome.validation_pass, outcome.validation_kind) == (None, None)
    assert outcome.validation_errors == [] and outcome.results == []


def test_outcome_joins_kinds_and_lists_failed_validators_by_label() -> None:
    specs = [
        {"kind": "json_parse"},
        {"kind": "regex", "pattern": "^\\{", "name": "starts with a brace"},
        {"kind": "regex", "pattern": "secret", "mode": "not_match"},
    ]
    outcome = run_validators('{"secret": 1}', specs)
    assert outcome.validation_kind == "json_parse+regex"
    assert outcome.validation_pass is False
    assert outcome.validation_errors == [ValidationIssue(
        validator="regex", message="matches /secret/ at position 2: 'secret'",
        detail={"pattern": "secret", "mode": "not_match", "span": [2, 8]})]
    assert [r.name for r in outcome.results] == [None, "starts with a brace", None]


def test_config_validators_block_builds_and_runs() -> None:
    config = PredictionsConfig.from_dict({"validators": {
        "json_schema": {"type": "object", "required": ["a"]},
        "rules": [{"kind": "length", "max_chars": 100}]}})
    outcome = run_validators('{"b": 1}', config.validators.specs())
    assert outcome.validation_kind == "json_schema+length"
    assert outcome.validation_errors[0].message == (
        "1 schema violation: (root): 'a' is a required property")


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        ([{"kind": "json_parse"}, {"kind": "regex", "pattern": "(unclosed"}],
         "validator 1 (regex): option 'pattern': not a valid regular expression"),
        ([{"kind": "regex", "patern": "x"}],
         "validator 0 (regex): option 'pattern': required; option 'patern': unknown option"),
        ([{"kind": "regex", "pattern": "x", "mode": "all"}],
         "validator 0 (regex): option 'mode': Input should be 'search', 'match'"),
        ([{"kind": "sql_parses"}],
         ("validator 0 (sql_parses): option 'kind': unknown validator kind 'sql_parses'; "
          "available: contains, equals, json_parse, json_schema")),
        ([{"pattern": "x"}], "validator 0: option 'kind': missing"),
        (["regex"], "validator 0: expected an object with 'kind', got 'regex'"),
        ([{"kind": "length", "min_words": 5, "max_words": 2}],
         "validator 0 (length): option 'min_words': 5 is more than max_words 2"),
        ([{"kind": "contains"}], "validator 0 (contains): option 'values': give 'value'"),
        ([{"kind": "python", "callable": "no_such_module_xyz:fn"}],
         "validator 0 (python): option 'callable': cannot import 'no_such_module_xyz'"),
        ([{"kind": "python", "callable": "json"}],
         "validator 0 (python): option 'callable': expected 'module:function', got 'json'"),
        ([{"kind": "tool_call", "schemas": {"f": {"type": 3}}}],
         "validator 0 (tool_call): option 'schemas.f': not a valid JSON Schema"),
    ],
)
def test_bad_specs_raise_config_error_naming_index_kind_and_option(
    specs: list, expected: str
) -> None:
    with pytest.raises(ConfigError, match="^" + _escape(expected)):
        build_validators(specs)


def test_specs_are_built_once_and_cached() -> None:
    spec = {"kind": "regex", "pattern": "x", "flags": "i"}
    [first] = build_validators([spec])
    [again] = build_validators([dict(reversed(list(spec.items())))])  # same spec, other order
    assert first is again
    assert build_validators([first]) == [first]  # built validators pass through


# --- entry points ---------------------------------------------------------------------------


@pytest.fixture
def plugin_validators(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The global validator registry seeing only the entry points a test appends."""
    points: list[EntryPoint] = []
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [p for p in points if p.group == group])
    VALIDATORS.refresh()
    yield points
    for point in points:
        VALIDATORS.unregister(point.name)
    VALIDATORS.refresh()


def test_entry_point_validator_is_loaded_lazily_and_built_from_options(
    plugin_validators: list[EntryPoint], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "predwatch_test_plugin_checks.py").write_text(
        "def shouting(*, min_ratio=0.5):\n"
        "    def check(text, context):\n"
        "        letters = [c for c in text if c.isalpha()]\n"
        "        ratio = sum(c.isupper() for c in letters) / max(len(letters), 1)\n"
        "        return ratio >= min_ratio, f'only {ratio:.0%} upper case'\n"
        "    return check\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_validators.append(
        EntryPoint("shouting", "predwatch_test_plugin_checks:shouting", VALIDATOR_GROUP))
    assert "shouting" in available_validators()
    assert "predwatch_test_plugin_checks" not in sys.modules  # listed, not imported
    outcome = run_validators("HELLO there", [{"kind": "shouting", "min_ratio": 0.9}])
    assert outcome.validation_errors[0].message == "only 50% upper case"
    assert "predwatch_test_plugin_checks" in sys.modules
    monkeypatch.delitem(sys.modules, "predwatch_test_plugin_checks")


def _escape(text: str) -> str:
    import re

    return re.escape(text)
