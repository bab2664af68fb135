"""The config builder: a form for ``PredictionsConfig`` that validates with the library's own code.

The form posts back to itself. Its values become the config dict a user would write, which goes
through ``PredictionsConfig.from_dict`` (every bad field at once, as ``ConfigError.detail``) and
then ``build_validators`` for the validator specs, exactly as a run would. Problems are shown
next to their fields; a valid config is given as JSON and as the Python to paste, with the cost
estimate from ``predwatch.estimate`` when that module is installed.

Validator specs that would make the *server* import code (``python``) or read a file
(``schema_path``) are not built here: they are checked when the run starts, on the training
machine, where that code and file live.
"""

from __future__ import annotations

import importlib
import json
import pprint
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from predwatch.config import (
    DEFAULT_METRICS,
    PredictionsConfig,
    max_sample_count,
    min_step_interval,
)
from predwatch.errors import ConfigError
from predwatch.server.ui import render

router = APIRouter()

TEXT_FIELDS = (
    "sample_count", "sample_frequency", "step_interval", "samples_path", "source", "set", "seed",
    "max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
    "batch_size", "max_batch_tokens", "overhead_budget",
)
CHECKBOXES = ("enabled", "do_sample")
# Validator specs the server does not build (see the module docstring).
_NOT_BUILT_HERE = ("python",)

SCHEMA_EXAMPLES: dict[str, dict[str, Any]] = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "city": {"type": "string"},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": False,
    },
    "label": {
        "type": "object",
        "properties": {
            "label": {"enum": ["positive", "negative", "neutral"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["label"],
    },
    "list": {"type": "array", "items": {"type": "string"}, "minItems": 1},
}
RULE_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "regex": [{"kind": "regex", "pattern": "^\\d+$", "mode": "fullmatch"}],
    "contains": [{"kind": "contains", "values": ["Answer:"], "match": "any"}],
    "length": [{"kind": "length", "max_words": 50}, {"kind": "not_truncated"}],
    "tool_call": [{"kind": "tool_call", "names": ["get_weather"]}],
}


@dataclass
class BuilderResult:
    """What the builder shows after a submit."""

    values: dict[str, Any]  # the form as entered (to fill the fields again)
    errors: dict[str, list[str]] = field(default_factory=dict)  # field -> reasons
    config: Optional[PredictionsConfig] = None
    notes: list[str] = field(default_factory=list)
    estimate: Any = None

    def add(self, field_name: str, reason: str) -> None:
        self.errors.setdefault(field_name, []).append(reason)


def default_values() -> dict[str, Any]:
    defaults = PredictionsConfig()
    values: dict[str, Any] = {name: "" for name in TEXT_FIELDS}
    values.update(
        sample_frequency=defaults.sample_frequency, source=defaults.source,
        seed=str(defaults.seed), max_new_tokens=str(defaults.max_new_tokens),
        temperature=str(defaults.temperature), top_p=str(defaults.top_p),
        num_beams=str(defaults.num_beams), repetition_penalty=str(defaults.repetition_penalty),
        batch_size=str(defaults.batch_size), overhead_budget=str(defaults.overhead_budget),
        enabled=True, do_sample=False, stop_strings="", metrics=list(DEFAULT_METRICS),
        json_parse=False, json_schema="", json_schema_path="", rules="",
    )
    return values


def config_dict(values: dict[str, Any], result: BuilderResult) -> dict[str, Any]:
    """The config dict the form describes (empty fields are left to the defaults)."""
    data: dict[str, Any] = {name: values[name] for name in TEXT_FIELDS if values[name] != ""}
    for name in CHECKBOXES:
        data[name] = bool(values[name])
    stops = [line for line in values["stop_strings"].splitlines() if line]
    if stops:
        data["stop_strings"] = stops
    data["metrics"] = list(values["metrics"])
    validators: dict[str, Any] = {}
    if values["json_parse"]:
        validators["json_parse"] = True
    if values["json_schema"].strip():
        validators["json_schema"] = values["json_schema"]  # the library parses the JSON text
    if values["json_schema_path"].strip():
        validators["json_schema_path"] = values["json_schema_path"].strip()
    if values["rules"].strip():
        try:
            validators["rules"] = json.loads(values["rules"])
        except json.JSONDecodeError as exc:
            result.add("validators.rules", f"not valid JSON: {exc.msg} (line {exc.lineno}, "
                                           f"column {exc.colno})")
    if validators:
        data["validators"] = validators
    return data


def _field_of(problem_field: str, specs: list[dict[str, Any]]) -> str:
    """Which form field a ``validators[i]...`` problem belongs to."""
    if problem_field.startswith("validators["):
        index = int(problem_field[len("validators["):].split("]")[0])
        spec = specs[index] if index < len(specs) else {}
        if spec.get("kind") == "json_schema" and "schema" in spec:
            return "validators.json_schema"
        return "validators.rules"
    return problem_field


def check_config(values: dict[str, Any]) -> BuilderResult:
    """Validate the form's values with the library; collect problems per field."""
    from predwatch.scoring import build_validators

    result = BuilderResult(values=values)
    data = config_dict(values, result)
    if result.errors:
        return result
    try:
        config = PredictionsConfig.from_dict(data)
    except ConfigError as exc:
        for problem in exc.detail or [{"field": "(config)", "reason": exc.message}]:
            result.add(str(problem.get("field") or "(config)"), str(problem.get("reason")))
        return result
    specs = config.validators.specs()
    buildable = [s for s in specs if s.get("kind") not in _NOT_BUILT_HERE and "schema_path" not in s]
    if len(buildable) < len(specs):
        result.notes.append("python validators and schema files are checked when the run starts "
                            "(on the training machine), not here.")
    try:
        build_validators(buildable)
    except ConfigError as exc:
        for problem in exc.detail or []:
            index_field = str(problem.get("field", ""))
            # Indices refer to ``buildable``; map each back to its spec for the field name.
            result.add(_field_of(index_field, buildable), f"{index_field}: {problem.get('reason')}")
        return result
    result.config = config
    result.estimate = estimate_cost(config)
    return result


def estimate_cost(config: PredictionsConfig) -> Any:
    """The cost estimate of ``predwatch.estimate`` when it is installed, else None."""
    try:
        module = importlib.import_module("predwatch.estimate")
    except ModuleNotFoundError:
        return None
    estimate = getattr(module, "estimate", None) or getattr(module, "estimate_cost", None)
    if estimate is None:
        return None
    try:
        return estimate(config)
    except (TypeError, ValueError, ConfigError) as exc:  # needs inputs the builder does not have
        return f"no estimate: {exc}"


def config_json(config: PredictionsConfig) -> dict[str, Any]:
    """The config as the smallest dict that means it (defaults left out; the frequency kept)."""
    data = config.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("sample_frequency", config.sample_frequency)
    return data


def python_snippet(data: dict[str, Any]) -> str:
    body = pprint.pformat(data, indent=4, width=88, sort_dicts=False)
    return (
        "from predwatch import PredictionsCallback\n\n"
        f"callback = PredictionsCallback(\n    {body.replace(chr(10), chr(10) + '    ')},\n"
        "    dataset=eval_dataset,  # prompts come from here unless the config names a set\n"
        ")\n"
        "trainer.add_callback(callback)\n"
    )


def _example_values(request: Request) -> dict[str, Any]:
    values = default_values()
    schema = request.query_params.get("schema_example")
    if schema in SCHEMA_EXAMPLES:
        values["json_schema"] = json.dumps(SCHEMA_EXAMPLES[schema], indent=2)
    rules = request.query_params.get("rules_example")
    if rules in RULE_EXAMPLES:
        values["rules"] = json.dumps(RULE_EXAMPLES[rules], indent=2)
    return values


def _render(request: Request, values: dict[str, Any], result: Optional[BuilderResult]) -> HTMLResponse:
    from predwatch.scoring import available_scorers, available_validators

    data = config_json(result.config) if result and result.config else None
    return render(
        request, "config.html", values=values, result=result, errors=result.errors if result else {},
        config_data=data, snippet=python_snippet(data) if data is not None else "",
        scorers=sorted(set(available_scorers()) | set(values["metrics"])),
        validator_kinds=available_validators(), schema_examples=SCHEMA_EXAMPLES,
        rule_examples=RULE_EXAMPLES, max_samples=max_sample_count(),
        min_interval=min_step_interval(),
    )


@router.get("/config", response_class=HTMLResponse, include_in_schema=False)
def config_page(request: Request) -> HTMLResponse:
    """The empty builder (``?schema_example=`` / ``?rules_example=`` prefill an example)."""
    return _render(request, _example_values(request), None)


@router.post("/config", response_class=HTMLResponse, include_in_schema=False)
async def config_submit(request: Request) -> HTMLResponse:
    """Validate the submitted form and show the config, or the problems next to the fields."""
    form = await request.form()
    values = default_values()
    for name in TEXT_FIELDS + ("stop_strings", "json_schema", "json_schema_path", "rules"):
        raw = form.get(name)
        values[name] = raw.strip() if isinstance(raw, str) and name in TEXT_FIELDS else (
            raw if isinstance(raw, str) else "")
    for name in CHECKBOXES + ("json_parse",):
        values[name] = form.get(name) is not None
    values["metrics"] = [m for m in form.getlist("metrics") if isinstance(m, str)]
    result = check_config(values)
    status = 200 if result.config is not None else 422
    response = _render(request, values, result)
    response.status_code = status
    return response
