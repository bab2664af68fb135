"""The config builder: a form for ``PredictionsConfig`` that validates with the library's own code.

The form posts back to itself. Its values become the config dict a user would write, which goes
through ``PredictionsConfig.from_dict`` (every bad field at once, as ``ConfigError.detail``) and
``build_validators`` for the validator specs, exactly as a run would. Problems are shown next to
their fields; a valid config is given as JSON and as the Python to paste, with the cost estimate
of ``predwatch.recording.estimate.estimate_cost`` for the training plan entered.

Validator specs that would make the *server* import code (``python``) or read a file
(``schema_path``) are not built here: they are checked when the run starts, on the training
machine, where that code and file live.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from predwatch.config import (
    DEFAULT_METRICS,
    PredictionsConfig,
    ValidatorsConfig,
    max_sample_count,
    min_step_interval,
)
from predwatch.demo import DEMO_SCHEMA
from predwatch.errors import ConfigError
from predwatch.server.deps import Access, store_of
from predwatch.server.pages.ui import render

router = APIRouter()

TEXT_FIELDS = (
    "sample_count", "sample_frequency", "step_interval", "samples_path", "source", "set", "seed",
    "max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "num_samples",
    "repetition_penalty", "batch_size", "max_batch_tokens", "overhead_budget",
)
CHECKBOXES = ("enabled", "do_sample")
LONG_FIELDS = ("stop_strings", "json_schema", "json_schema_path", "rules")
# The training plan: keyword arguments of ``estimate_cost`` and how to read them.
PLAN_FIELDS: dict[str, type] = {
    "num_train_epochs": float, "max_steps": int, "steps_per_epoch": float,
    "eval_strategy": str, "eval_steps": float, "prompts": int,
    "tokens_per_second": float, "seconds_per_step": float,
}
_NOT_BUILT_HERE = ("python",)  # see the module docstring

SCHEMA_EXAMPLES: dict[str, dict[str, Any]] = {
    "object": DEMO_SCHEMA,  # the demo's task: an object with required, typed fields
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

    errors: dict[str, list[str]] = field(default_factory=dict)  # form field -> reasons
    config: PredictionsConfig | None = None
    notes: list[str] = field(default_factory=list)
    estimate: Any = None  # an ``Estimate`` as a dict, a reason there is none, or None

    def add(self, name: str, reason: str) -> None:
        if reason not in self.errors.get(name, []):
            self.errors.setdefault(name, []).append(reason)


def default_values() -> dict[str, Any]:
    """The form filled with the defaults of ``PredictionsConfig``."""
    defaults = PredictionsConfig()
    values: dict[str, Any] = {name: "" for name in (*TEXT_FIELDS, *LONG_FIELDS, *PLAN_FIELDS)}
    for name in ("sample_frequency", "source", "seed", "max_new_tokens", "temperature", "top_p",
                 "num_beams", "num_samples", "repetition_penalty", "batch_size",
                 "overhead_budget"):
        values[name] = str(getattr(defaults, name))
    values.update(enabled=True, do_sample=False, json_parse=False, metrics=list(DEFAULT_METRICS))
    return values


def form_values(form: Any) -> dict[str, Any]:
    """The submitted form as the builder's values (what is absent keeps its default)."""
    values = default_values()
    for name in (*TEXT_FIELDS, *LONG_FIELDS, *PLAN_FIELDS):
        raw = form.get(name)
        values[name] = raw if isinstance(raw, str) else ""
        if name not in ("stop_strings", "json_schema", "rules"):
            values[name] = values[name].strip()
    for name in (*CHECKBOXES, "json_parse"):
        values[name] = form.get(name) is not None
    values["metrics"] = [m for m in form.getlist("metrics") if isinstance(m, str)]
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
    if values["json_schema_path"]:
        validators["json_schema_path"] = values["json_schema_path"]
    if values["rules"].strip():
        try:
            validators["rules"] = json.loads(values["rules"])
        except json.JSONDecodeError as exc:
            result.add("validators.rules",
                       f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    if validators:
        data["validators"] = validators
    return data


def _located(problem: str, specs: list[dict[str, Any]], first_rule: int) -> tuple[str, str]:
    """The form field a ``validators[i].option`` problem of ``build_validators`` belongs to,
    and the problem's place as the user wrote it (``rules[0].pattern``)."""
    head, _, option = problem.partition("].")
    try:
        index = int(head[len("validators["):].rstrip("]"))
    except ValueError:
        return "validators.rules", problem
    if index < first_rule:
        kind = specs[index].get("kind") if index < len(specs) else None
        name = "json_schema" if kind == "json_schema" else "json_parse"
        return f"validators.{name}", option or name
    return "validators.rules", f"rules[{index - first_rule}]" + (f".{option}" if option else "")


def check_validators(data: dict[str, Any], result: BuilderResult) -> None:
    """Build every validator spec the config names, as a run would (except see module doc)."""
    from predwatch.scoring import build_validators

    raw = data.get("validators") or {}
    try:
        validators = ValidatorsConfig.model_validate(raw)
        specs, rules = validators.specs(), validators.rules
    except ValueError:  # reported by ``from_dict``; still check the rules on their own
        listed = raw.get("rules") if isinstance(raw, dict) else None
        rules = [r for r in listed or [] if isinstance(r, dict) and isinstance(r.get("kind"), str)]
        specs = list(rules)
    buildable = [
        s for s in specs if s.get("kind") not in _NOT_BUILT_HERE and "schema_path" not in s
    ]
    first_rule = len(buildable) - len([r for r in rules if r in buildable])
    if len(buildable) < len(specs):
        result.notes.append("python validators and schema files are checked when the run starts "
                            "(on the training machine), not here.")
    try:
        build_validators(buildable)
    except ConfigError as exc:
        for problem in exc.detail or [{"field": "validators", "reason": exc.message}]:
            name, where = _located(str(problem.get("field", "validators")), buildable, first_rule)
            result.add(name, f"{where}: {problem.get('reason')}")


def check_config(values: dict[str, Any], store: Any = None) -> BuilderResult:
    """Validate the form's values with the library; collect every problem, per field."""
    result = BuilderResult()
    data = config_dict(values, result)
    config = None
    try:
        config = PredictionsConfig.from_dict(data)
    except ConfigError as exc:
        for problem in exc.detail or [{"field": "(config)", "reason": exc.message}]:
            result.add(str(problem.get("field") or "(config)"), str(problem.get("reason")))
    check_validators(data, result)
    plan = training_plan(values, result)
    if config is not None and not result.errors:
        result.config = config
        result.estimate = estimate(config, plan, store)
    return result


def training_plan(values: dict[str, Any], result: BuilderResult) -> dict[str, Any]:
    """The training plan fields that are filled, as ``estimate_cost`` keyword arguments."""
    plan: dict[str, Any] = {}
    for name, kind in PLAN_FIELDS.items():
        raw = values[name]
        if raw == "":
            continue
        try:
            plan[name] = kind(raw)
        except ValueError:
            result.add(name, f"not a{'n integer' if kind is int else ' number'}: {raw!r}")
    return plan


def estimate(config: PredictionsConfig, plan: dict[str, Any], store: Any = None) -> Any:
    """The cost estimate of ``predwatch.recording.estimate`` as a dict, or why there is none (a
    stored set's size comes from ``store``)."""
    try:
        module = importlib.import_module("predwatch.recording.estimate")
    except ModuleNotFoundError:
        return None
    set_size = None
    if store is not None and plan.get("prompts") is None:
        set_size = module.stored_set_size(store, config)
    try:
        return module.estimate_cost(config, **plan, set_size=set_size).model_dump(mode="json")
    except ConfigError as exc:  # the plan does not say enough yet
        return f"fill in the training plan for an estimate: {exc.message}"


def set_names(request: Request) -> list[str]:
    """Names of the stored prediction sets the caller may use (for the set field)."""
    return [s.name for s in store_of(request).list_sets()]


def config_json(config: PredictionsConfig) -> dict[str, Any]:
    """The config as the smallest dict that means it (defaults left out; the frequency kept)."""
    defaults = PredictionsConfig().model_dump(mode="json")
    data = {k: v for k, v in config.model_dump(mode="json").items() if v != defaults.get(k)}
    if "validators" in data:
        base = defaults["validators"]
        data["validators"] = {k: v for k, v in data["validators"].items() if v != base.get(k)}
    return {"sample_frequency": config.sample_frequency, **data}


def py_literal(value: Any, indent: int = 0) -> str:
    """A JSON-like value as Python source (``True``/``None``, 4-space indents)."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {py_literal(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        flat = "[" + ", ".join(py_literal(v) for v in value) + "]"
        if len(flat) <= 72 and "\n" not in flat:
            return flat
        lines = "\n".join(f"{inner}{py_literal(v, indent + 4)}," for v in value)
        return "[\n" + lines + f"\n{pad}]"
    if isinstance(value, (bool, dict, list)) or value is None:
        return repr(value)  # True / False / None / {} / []
    return json.dumps(value, ensure_ascii=False)


def python_snippet(data: dict[str, Any]) -> str:
    return (
        "from predwatch import PredictionsCallback\n\n"
        f"config = {py_literal(data)}\n\n"
        "# prompts come from eval_dataset unless the config names a set or samples_path\n"
        "trainer.add_callback(PredictionsCallback(config, dataset=eval_dataset))\n"
    )


def _render(request: Request, values: dict[str, Any], result: BuilderResult | None
            ) -> HTMLResponse:
    from predwatch.scoring import available_scorers, available_validators

    data = config_json(result.config) if result and result.config else None
    return render(
        request, "config.html", status=422 if result and result.errors else 200,
        values=values, result=result, errors=result.errors if result else {},
        config_data=data, snippet=python_snippet(data) if data is not None else "",
        scorers=list(dict.fromkeys([*DEFAULT_METRICS, *sorted(available_scorers()),
                                    *values["metrics"]])),
        validator_kinds=available_validators(), schema_examples=SCHEMA_EXAMPLES,
        rule_examples=RULE_EXAMPLES, max_samples=max_sample_count(),
        min_interval=min_step_interval(), set_names=set_names(request),
        api_docs="/docs#/estimate",  # no JSON twin to GET: the estimate is POST /api/estimate
    )


@router.get("/config", response_class=HTMLResponse, include_in_schema=False)
def config_page(request: Request, access: Access) -> HTMLResponse:
    """The builder with defaults (``?schema_example=`` / ``?rules_example=`` fill an example)."""
    values = default_values()
    schema = request.query_params.get("schema_example")
    if schema in SCHEMA_EXAMPLES:
        values["json_schema"] = json.dumps(SCHEMA_EXAMPLES[schema], indent=2)
    rules = request.query_params.get("rules_example")
    if rules in RULE_EXAMPLES:
        values["rules"] = json.dumps(RULE_EXAMPLES[rules], indent=2)
    return _render(request, values, None)


@router.post("/config", response_class=HTMLResponse, include_in_schema=False)
async def config_submit(request: Request, access: Access) -> HTMLResponse:
    """Validate the submitted form: the config and its estimate, or problems next to fields."""
    values = form_values(await request.form())
    return _render(request, values, check_config(values, access.store))
