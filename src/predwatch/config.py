"""Configuration: ``PredictionsConfig`` (what to record) and ``Settings`` (where, and the server).

This is the only module that reads ``os.environ``. Precedence everywhere:
argument > CLI flag > environment (``PREDWATCH_*``) > default.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from predwatch.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///predwatch.db"
DEFAULT_METRICS = (
    "exact_match",
    "char_error_rate",
    "length_ratio",
    "word_overlap",
    "token_f1",
    "rouge_l",
)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer",
            detail=[{"field": name, "reason": "not an integer"}],
        ) from None


DEFAULT_MAX_SAMPLE_COUNT = 1000
MAX_NUM_SAMPLES = 64  # answers per prompt per point: each one is generated, scored and stored


def max_sample_count() -> int:
    """Default upper bound of ``sample_count`` when the config sets no ``max_sample_count``
    (``PREDWATCH_MAX_SAMPLE_COUNT``, default 1000)."""
    return _env_int("PREDWATCH_MAX_SAMPLE_COUNT", DEFAULT_MAX_SAMPLE_COUNT)


def min_step_interval() -> int:
    """Lower bound of ``step_interval`` (``PREDWATCH_MIN_STEP_INTERVAL``, default 10)."""
    return _env_int("PREDWATCH_MIN_STEP_INTERVAL", 10)


# What a ``fields`` mapping may name (see ``predwatch.sampling.fields``).
FIELD_NAMES = ("prompt", "completion", "messages", "system", "tools", "chat_template_kwargs")


def check_field_mapping(fields: Mapping[str, Any]) -> None:
    """Refuse a mapping with an unknown name, an empty path, or neither prompt nor messages.

    Raises:
        ValueError: Naming the problem.
    """
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(
            f"unknown field {', '.join(map(repr, unknown))} (known: {', '.join(FIELD_NAMES)})"
        )
    for name, path in fields.items():
        if not isinstance(path, str) or not path.strip() or "" in path.split("."):
            raise ValueError(f"{name}: {path!r} is not a key or a dotted path like 'a.b'")
    if "prompt" not in fields and "messages" not in fields:
        raise ValueError("map 'prompt' or 'messages' (where the prompt is in each record)")
    if "prompt" in fields and "messages" in fields:
        raise ValueError("map 'prompt' or 'messages', not both")


def _raise_config_error(exc: ValidationError, what: str) -> None:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown field (check the spelling)"
        problems.append({"field": field, "reason": reason})
    lines = "\n".join(f"  - {p['field']}: {p['reason']}" for p in problems)
    raise ConfigError(
        f"invalid {what} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}",
        detail=problems,
    ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidatorsConfig(_Strict):
    """The original system's validator block, plus ``rules``: a list of validator specs.

    A spec is a dict with ``kind`` (a registered validator name) and that validator's options,
    e.g. ``{"kind": "regex", "pattern": "^\\\\d+$", "mode": "fullmatch"}``.
    """

    json_parse: bool = False
    json_schema: dict[str, Any] | None = None
    json_schema_path: str | None = None
    rules: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _schema_from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
        if value is not None and not isinstance(value, dict):
            raise ValueError("a JSON Schema must be an object")
        return value

    @field_validator("rules")
    @classmethod
    def _rules_have_kind(cls, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, rule in enumerate(rules):
            if not isinstance(rule.get("kind"), str):
                raise ValueError(f"rule {i} has no 'kind' (the validator name)")
        return rules

    def specs(self) -> list[dict[str, Any]]:
        """Every configured validator as a spec dict, in a stable order."""
        specs: list[dict[str, Any]] = []
        if self.json_parse and not (self.json_schema or self.json_schema_path):
            specs.append({"kind": "json_parse"})
        if self.json_schema is not None:
            specs.append({"kind": "json_schema", "schema": self.json_schema})
        if self.json_schema_path:
            specs.append({"kind": "json_schema", "schema_path": self.json_schema_path})
        specs.extend(dict(rule) for rule in self.rules)
        return specs


class PredictionsConfig(_Strict):
    """What predwatch records at each evaluation point.

    Accepts the original system's dict unchanged (``enabled``, ``sample_count``,
    ``sample_frequency``, ``step_interval``, ``samples_path``, ``validators``) plus predwatch's
    own fields. Build one with ``PredictionsConfig.from_dict(d)`` (or ``PredictionsConfig(**d)``)
    to get a single ``ConfigError`` listing every bad field.
    """

    # --- the original system's fields -------------------------------------------------------
    enabled: bool = True
    # Before sample_count: fields are validated in order, and sample_count's check reads it.
    max_sample_count: int | None = Field(
        default=None, ge=1,
        description="cap on sample_count (every prompt is generated at every point); default "
        f"PREDWATCH_MAX_SAMPLE_COUNT or {DEFAULT_MAX_SAMPLE_COUNT}",
    )
    sample_count: int | None = Field(
        default=None, description="prompts per evaluation point; default 5 (a set: all items)"
    )
    sample_frequency: Literal["epoch", "eval", "steps"] = "epoch"
    step_interval: int | None = None
    samples_path: str | None = None
    validators: ValidatorsConfig = Field(default_factory=ValidatorsConfig)

    # --- where the prompts come from -----------------------------------------------------
    source: Literal["dataset", "set"] = "dataset"
    fields: dict[str, str] | None = Field(
        default=None,
        description="where prompt/completion/messages/system/tools/chat_template_kwargs are "
        "in each record of a custom schema (keys or dotted paths)",
    )
    set: str | None = Field(default=None, description="NAME or NAME@VERSION, or a file path")
    seed: int = 42

    # --- generation -----------------------------------------------------------------------
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    num_beams: int = Field(default=1, ge=1, le=64)
    # After do_sample and num_beams: its check reads them.
    num_samples: int = Field(
        default=1, ge=1, le=MAX_NUM_SAMPLES,
        description="answers drawn per prompt at each evaluation point (more than 1 needs "
        "do_sample); each has its own seed (from seed, the prompt and its number)",
    )
    repetition_penalty: float = Field(default=1.0, gt=0)
    stop_strings: list[str] = Field(default_factory=list)

    # --- batching ---------------------------------------------------------------------------
    batch_size: int | None = Field(
        default=None, ge=1, le=1024,
        description="samples per batch; unset: 32 for a model on the CPU, 16 on an accelerator "
        "(and 16 requests in flight for the 'openai' backend)",
    )
    max_batch_tokens: int | None = Field(
        default=None, ge=1, description="cap on prompt+new tokens per batch (overrides batch_size)"
    )

    # --- scoring ----------------------------------------------------------------------------
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))

    # --- cost -------------------------------------------------------------------------------
    overhead_budget: float = Field(
        default=0.05, ge=0, le=1, description="warn when predictions take more than this share"
    )

    @field_validator("validators", mode="before")
    @classmethod
    def _validators_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"rules": value}
        return value

    @field_validator("sample_count")
    @classmethod
    def _sample_count_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if value < 1:
            raise ValueError("must be at least 1")
        cap = info.data.get("max_sample_count")
        upper = cap if cap is not None else max_sample_count()
        if value > upper:
            raise ValueError(
                f"{value} is above max_sample_count ({upper}): every prompt is generated at "
                "every evaluation point; set max_sample_count in this config (or "
                "PREDWATCH_MAX_SAMPLE_COUNT) to allow more"
            )
        return value

    @field_validator("num_samples")
    @classmethod
    def _num_samples_need_sampling(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("do_sample") is False:
            raise ValueError(
                f"{value} answers per prompt need do_sample true: greedy decoding gives the "
                "same answer every time (set do_sample, or num_samples 1)"
            )
        if value > 1 and (info.data.get("num_beams") or 1) > 1:
            raise ValueError(
                f"{value} answers per prompt need num_beams 1: each answer is drawn from its "
                "own seed, which beam search cannot do"
            )
        return value

    @field_validator("fields")
    @classmethod
    def _fields_mapping(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            check_field_mapping(value)
        return value

    @field_validator("stop_strings", mode="before")
    @classmethod
    def _stop_string(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("metrics")
    @classmethod
    def _metrics_nonempty(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a metric is listed twice")
        return value

    @field_validator("step_interval")
    @classmethod
    def _step_interval(cls, value: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("sample_frequency") == "steps":
            lower = min_step_interval()
            if value is None:
                raise ValueError("required when sample_frequency is 'steps'")
            if value < lower:
                raise ValueError(
                    f"must be at least {lower} (PREDWATCH_MIN_STEP_INTERVAL lowers the limit)"
                )
        elif value is not None and value < 1:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> PredictionsConfig:
        if self.sample_frequency == "steps" and self.step_interval is None:
            # step_interval was omitted entirely, so its field validator never ran.
            raise ValueError("step_interval is required when sample_frequency is 'steps'")
        if self.source == "set" and not (self.set or self.samples_path):
            raise ValueError("source 'set' needs 'set' (NAME[@VERSION] or a file path)")
        return self

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None = None, **overrides: Any
    ) -> PredictionsConfig:
        """Validate a config dict (original system's shape or ours); raise one ``ConfigError``."""
        merged = {**dict(data or {}), **overrides}
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            _raise_config_error(exc, "predictions config")
            raise  # unreachable

    @classmethod
    def from_file(cls, path: str | Path) -> PredictionsConfig:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data)

    @property
    def effective_sample_count(self) -> int | None:
        """Prompts per evaluation point: the given count, else 5 for a dataset, else a whole set."""
        if self.sample_count is not None:
            return self.sample_count
        return None if self.source == "set" else 5

    def generation_params(self) -> dict[str, Any]:
        """The generation settings as a plain dict (the recorded ``generation_params``)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
            "stop_strings": list(self.stop_strings),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
        }


_SETTINGS_ENV = {
    "database_url": "PREDWATCH_DATABASE_URL",
    "server_url": "PREDWATCH_SERVER_URL",
    "run_token": "PREDWATCH_RUN_TOKEN",
    "spool_dir": "PREDWATCH_SPOOL_DIR",
    "host": "PREDWATCH_HOST",
    "port": "PREDWATCH_PORT",
    "auth": "PREDWATCH_AUTH",
    "max_body_bytes": "PREDWATCH_MAX_BODY_BYTES",
    "max_rows_per_request": "PREDWATCH_MAX_ROWS_PER_REQUEST",
    "max_text_chars": "PREDWATCH_MAX_TEXT_CHARS",
    "heartbeat_seconds": "PREDWATCH_HEARTBEAT_SECONDS",
    "delivery_timeout_seconds": "PREDWATCH_DELIVERY_TIMEOUT_SECONDS",
    "api_key": "PREDWATCH_API_KEY",
}


# What a recorder (a training job) reads from the environment.
RECORDER_SETTINGS = ("database_url", "server_url", "run_token", "spool_dir",
                     "delivery_timeout_seconds", "api_key")


class Settings(_Strict):
    """Where predwatch writes and how its server behaves. ``Settings.from_env()`` reads
    ``PREDWATCH_*``; explicit keyword arguments win over the environment."""

    database_url: str = DEFAULT_DATABASE_URL
    server_url: str | None = None  # a recorder sends to this ingest API instead of a database
    run_token: str | None = None
    spool_dir: str = ".predwatch/spool"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: Literal["auto", "on", "off"] = "auto"  # auto: required unless bound to loopback
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_rows_per_request: int = Field(default=5000, ge=1)
    max_text_chars: int = Field(default=100_000, ge=16)
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    delivery_timeout_seconds: float = Field(default=60.0, gt=0)
    api_key: str | None = None  # a read API key: CLI/sink calls to a server that requires auth

    @classmethod
    def from_env(cls, *, only: Sequence[str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PREDWATCH_*`` variables; non-None ``overrides`` win. ``only`` names
        the fields to read from the environment (the others keep their defaults): a training
        job does not fail on a bad server-only variable it never uses."""
        data: dict[str, Any] = {}
        for field, var in _SETTINGS_ENV.items():
            if only is not None and field not in only:
                continue
            if var in os.environ and os.environ[var] != "":
                data[field] = os.environ[var]
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            _raise_config_error(exc, "settings")
            raise  # unreachable

    def to_env(self) -> dict[str, str]:
        """The ``PREDWATCH_*`` variables that reproduce these settings in a child process
        (``from_env`` of the result gives back equal settings; unset optional fields are left
        out)."""
        env = {}
        for field, var in _SETTINGS_ENV.items():
            value = getattr(self, field)
            if value is not None:
                env[var] = str(value)
        return env

    @property
    def auth_required(self) -> bool:
        if self.auth == "on":
            return True
        if self.auth == "off":
            return False
        return not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or a loopback address (127.0.0.0/8,
    ::1). A name like ``127.evil.example`` is not an address, so it is not loopback."""
    host = host.strip()
    if host.lower() == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_flag(name: str) -> bool:
    """A boolean ``PREDWATCH_*`` flag (used by tests and the CLI): 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_value(name: str) -> str | None:
    """One environment value, for the few places outside Settings that take one (tests, CLI)."""
    value = os.environ.get(name)
    return value if value else None
