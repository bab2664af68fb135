"""One registry for metrics ("scorers") and validators, extended by decorator or entry point.

A scorer is a function ``(prediction, ground_truth) -> float | None`` on the raw texts; its
registration carries how to show it (``Metric``: label, direction, range, format), and every
list of metrics in the UI and the API (table columns, sort orders, charts, headline numbers,
``/api/metrics``) derives from that. A validator is a *factory*: called with a spec's options
it returns a check
``(text, context) -> Verdict | bool | (bool, message) | (bool, message, detail)``.

Third-party packages add either by entry point, loaded only when a name is first looked up and
not already registered::

    [project.entry-points."predwatch.scorers"]
    bleu = "mypkg.metrics:bleu"
    [project.entry-points."predwatch.validators"]
    sql_parses = "mypkg.checks:sql_parses"
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from predwatch.errors import ConfigError

SCORER_GROUP = "predwatch.scorers"
VALIDATOR_GROUP = "predwatch.validators"


class Scorer(Protocol):
    """A metric: a score for a prediction against its ground truth (None: not applicable)."""

    def __call__(self, prediction: str, ground_truth: str) -> float | None: ...


@dataclass(frozen=True)
class ValidationContext:
    """What a check may know besides the text.

    Attributes:
        finish_reason: Why generation stopped (``eos``, ``length``, ``stop``, ``error``).
        completion_tokens: Tokens generated, when the generator counted them.
        ground_truth: The expected answer, when there is one.
        options: The spec's ``options`` object (``python`` validators), else empty.
    """

    finish_reason: str | None = None
    completion_tokens: int | None = None
    ground_truth: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What a check found: passed or not, why, and structured detail for the UI."""

    passed: bool
    message: str | None = None
    detail: Any = None


CheckReturn = Verdict | bool | tuple
Check = Callable[[str, ValidationContext], CheckReturn]
ValidatorFactory = Callable[..., Check]


class OptionError(ValueError):
    """A validator factory rejects one option; ``build_validators`` names the spec around it."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects, with lazily loaded entry points.

    Args:
        what: What the entries are, for messages ("metric", "validator kind").
        group: The entry-point group third-party packages register under.
        discover: Returns the group's entry points (tests pass their own).
    """

    def __init__(
        self,
        what: str,
        group: str,
        discover: Callable[[], Iterable[EntryPoint]] | None = None,
    ) -> None:
        self.what = what
        self.group = group
        self._discover = discover or (lambda: entry_points(group=group))
        self._entries: dict[str, T] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._lock = threading.RLock()
        self.version = 0  # bumped by every registration, so caches of built objects can expire

    def register(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Register ``obj`` as ``name``; a different object under a taken name needs ``replace``."""
        with self._lock:
            current = self._entries.get(name)
            if current is not None and not replace and _qualname(current) != _qualname(obj):
                raise ValueError(
                    f"{self.what} {name!r} is already registered ({_qualname(current)}); "
                    "pass replace=True to override it"
                )
            self._entries[name] = obj
            self.version += 1

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error when absent)."""
        with self._lock:
            if self._entries.pop(name, None) is not None:
                self.version += 1

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered (entry points not yet loaded are not)."""
        return name in self._entries

    def refresh(self) -> None:
        """Forget the discovered entry points (to see packages installed since)."""
        with self._lock:
            self._entry_points = None

    def get(self, name: str) -> T:
        """The entry called ``name``, loading its entry point on first use.

        Raises:
            ConfigError: No such name (the message lists the available ones), or its entry
                point failed to load.
        """
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        with self._lock:
            if name not in self._entries:
                point = self._points().get(name)
                if point is None:
                    raise ConfigError(
                        f"unknown {self.what} {name!r}; available: {', '.join(self.names())}",
                        detail=[{"field": self.what, "reason": f"unknown: {name}"}],
                    )
                self._entries[name] = self._load(point)
            return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name and every entry-point name (not loaded), sorted."""
        with self._lock:
            return sorted(set(self._entries) | set(self._points()))

    def _points(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {point.name: point for point in self._discover()}
        return self._entry_points

    def _load(self, point: EntryPoint) -> T:
        try:
            obj = point.load()
        except Exception as exc:  # an entry point can fail in any way its import can
            raise ConfigError(
                f"{self.what} {point.name!r} could not be loaded from {point.value!r} "
                f"(entry point group {self.group}): {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(obj):
            raise ConfigError(
                f"{self.what} {point.name!r} from {point.value!r} is not callable"
            )
        return obj  # type: ignore[no-any-return]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


SCORERS: Registry[Scorer] = Registry("metric", SCORER_GROUP)
VALIDATORS: Registry[ValidatorFactory] = Registry("validator kind", VALIDATOR_GROUP)

MetricFormat = Literal["pct", "num"]


class Metric(BaseModel):
    """How a metric is shown (inspect_ai style: it lives with the registration).

    Attributes:
        name: The registered name (the key in ``Prediction.metrics`` and trend ``averages``).
        label: A short column header ("CER").
        title: A phrase for cards, charts and tooltips ("Char error rate").
        higher_is_better: True, False, or None (neither: e.g. a length ratio).
        range: The values' bounds for charts, or None (scale to the data).
        format: ``pct`` (a share shown as a percentage) or ``num``.
        featured: True: always among the run page's columns, cards and charts; None: there
            when the run has values for it; False: only in sort orders and the API.
    """

    name: str
    label: str
    title: str
    higher_is_better: bool | None = True
    range: tuple[float, float] | None = (0.0, 1.0)
    format: MetricFormat = "num"
    featured: bool | None = None

    model_config = ConfigDict(frozen=True)


METRICS: dict[str, Metric] = {}
"""Display metadata of every metric registered with ``@scorer`` (entry points: defaults)."""


def scorer(
    name: str,
    *,
    replace: bool = False,
    label: str | None = None,
    title: str | None = None,
    higher_is_better: bool | None = True,
    range: tuple[float, float] | None = (0.0, 1.0),  # noqa: A002 - the field's name
    format: MetricFormat = "num",  # noqa: A002 - the field's name
    featured: bool | None = None,
) -> Callable[[T], T]:
    """Register a metric function under ``name``, with how to show it (see ``Metric``)."""
    info = Metric(name=name, label=label or name, title=title or label or name.replace("_", " "),
                  higher_is_better=higher_is_better, range=range, format=format,
                  featured=featured)

    def decorate(fn: T) -> T:
        SCORERS.register(name, fn, replace=replace)  # type: ignore[arg-type]
        METRICS[name] = info
        return fn

    return decorate


def pass_at_k_of(name: str) -> int | None:
    """k when ``name`` is a pass@k metric (``pass@4``), else None."""
    head, _, k = name.partition("@")
    if head != "pass" or not k.isdigit() or k.startswith("0"):
        return None
    return int(k)


def _pass_metric(k: int) -> Metric:
    return Metric(name=f"pass@{k}", label=f"pass@{k}", title=f"Pass@{k}", format="pct",
                  higher_is_better=True)


SAMPLE_METRICS: dict[str, Metric] = {
    m.name: m for m in (
        _pass_metric(1),
        Metric(name="disagreement", label="Disagree", title="Disagreement", format="pct",
               higher_is_better=None),
    )
}
"""Metrics of several answers to one prompt (``num_samples`` > 1; ``scoring.samples``): not
scorers of one answer, so never in a config's ``metrics``. pass@k for any k is known by name
(``metric_info("pass@8")``); pass@1 and disagreement are listed by ``metrics()``."""


def metric_info(name: str) -> Metric:
    """How to show metric ``name``: its registration's, a sample metric's (pass@k,
    disagreement), or plain defaults for one registered without (an entry point,
    ``SCORERS.register``)."""
    found = METRICS.get(name) or SAMPLE_METRICS.get(name)
    if found is not None:
        return found
    k = pass_at_k_of(name)
    if k is not None:
        return _pass_metric(k)
    return Metric(name=name, label=name, title=name.replace("_", " "), higher_is_better=None,
                  range=None)


def metrics() -> list[Metric]:
    """Every metric registered by decorator, in registration order (built-ins first), then
    the sample metrics pass@1 and disagreement."""
    scorers = [METRICS[name] for name in list(METRICS) if name in SCORERS]
    taken = {m.name for m in scorers}
    return scorers + [m for name, m in SAMPLE_METRICS.items() if name not in taken]


def sample_metrics_in(names: Iterable[str]) -> list[Metric]:
    """The sample metrics among ``names`` that ``metrics()`` does not list (pass@k, k > 1),
    in order of k."""
    ks = {k for k in map(pass_at_k_of, names) if k is not None}
    return [_pass_metric(k) for k in sorted(ks) if f"pass@{k}" not in SAMPLE_METRICS]


def validator(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Register a validator factory under ``name`` (the spec's ``kind``)."""

    def decorate(fn: T) -> T:
        VALIDATORS.register(name, fn, replace=replace)  # type: ignore[arg-type]
        return fn

    return decorate


def get_scorer(name: str) -> Scorer:
    """The metric called ``name``. Raises ConfigError listing the available ones."""
    return SCORERS.get(name)


def get_validator(name: str) -> ValidatorFactory:
    """The validator factory of kind ``name``. Raises ConfigError listing the available ones."""
    return VALIDATORS.get(name)


def available_scorers() -> list[str]:
    """Names of every metric, built in or installed."""
    return SCORERS.names()


def available_validators() -> list[str]:
    """Names of every validator kind, built in or installed."""
    return VALIDATORS.names()
