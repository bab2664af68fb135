"""What recording predictions costs a run: answers, generated tokens, time, share of training.

``estimate_cost`` works from the plan (epochs, steps, evaluation strategy); ``estimate_from_point``
and ``estimate_from_run`` from what the first evaluation point measured. How many evaluation
points a run has follows ``transformers.Trainer`` (5.x):

- ``epoch``: one per epoch; with ``max_steps`` the last, partial epoch counts too
  (``ceil(max_steps / steps_per_epoch)``).
- ``eval``: per ``eval_strategy``: ``epoch`` as above; ``steps`` every ``eval_steps`` (a fraction
  below 1 means ``ceil(total_steps * eval_steps)``) plus one at the last step when it is not a
  multiple (the Trainer evaluates at the end); ``no``: none.
- ``steps``: ``floor(total_steps / step_interval)``.

``share`` is the prediction time over the training time (0.05: recording adds 5% to training);
above ``PredictionsConfig.overhead_budget`` the estimate is ``over_budget`` with a ``warning``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from predwatch.config import PredictionsConfig
from predwatch.errors import ConfigError, DataError
from predwatch.records import EvalPoint
from predwatch.storage.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class Estimate(BaseModel):
    """The projected cost of recording a run's predictions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frequency: str
    points: int | None  # evaluation points in the run (None: the plan is not known)
    prompts: int  # answers per evaluation point
    predictions: int | None
    total_steps: int | None = None
    generated_tokens: int | None = None  # upper bound: predictions x max_new_tokens
    expected_tokens: int | None = None  # predictions x measured mean completion tokens
    seconds: float | None = None  # time spent generating over the run
    training_seconds: float | None = None
    share: float | None = None  # seconds / training_seconds
    budget: float
    over_budget: bool = False
    warning: str | None = None
    notes: list[str] = Field(default_factory=list)


def estimate_cost(
    config: PredictionsConfig,
    *,
    prompts: int | None = None,
    num_train_epochs: float | None = None,
    max_steps: int | None = None,
    steps_per_epoch: float | None = None,
    eval_strategy: str | None = None,
    eval_steps: float | None = None,
    tokens_per_second: float | None = None,
    seconds_per_prediction: float | None = None,
    mean_completion_tokens: float | None = None,
    seconds_per_step: float | None = None,
    training_seconds: float | None = None,
    frequency: str | None = None,
    set_size: int | None = None,
) -> Estimate:
    """Project the cost of a run's predictions from its training plan.

    Args:
        config: The predictions config (frequency, ``sample_count``, ``max_new_tokens``, budget).
        prompts: Answers per point; default ``config.effective_sample_count`` (times
            ``num_samples``), or for a set run what it answers of ``set_size`` items: all of
            them, at most ``sample_count``.
        num_train_epochs, max_steps, steps_per_epoch: The plan; ``max_steps`` > 0 wins over
            epochs, as in ``TrainingArguments``. ``steps_per_epoch`` is optimizer steps.
        eval_strategy, eval_steps: ``TrainingArguments`` values (for ``eval`` frequency).
        tokens_per_second: Measured generation throughput (completion tokens per second).
        seconds_per_prediction: Measured time per answer (used when there is no throughput).
        mean_completion_tokens: Measured mean answer length; else the upper bound is used.
        seconds_per_step, training_seconds: Training speed, or the total training time.
        frequency: Override ``config.sample_frequency`` (to compare the three).
        set_size: Items in the config's set (a set run answers ``min(sample_count, set_size)``).

    Raises:
        ConfigError: The plan does not say how many evaluation points there are, or a set run
            without ``sample_count`` is given neither ``prompts`` nor ``set_size``.
    """
    freq = frequency or config.sample_frequency
    n = prompts if prompts is not None else _prompts_per_point(config, set_size)
    if n is None:
        raise ConfigError(
            "the run answers every item of its set: pass the set's size (prompts=...)",
            detail=[{"field": "prompts", "reason": "missing"}],
        )
    total = _total_steps(num_train_epochs, max_steps, steps_per_epoch)
    epochs = _epochs(num_train_epochs, max_steps, steps_per_epoch)
    notes: list[str] = []
    points = _points(config, freq, total, epochs, eval_strategy, eval_steps, notes)
    predictions = points * n
    expected = round(predictions * mean_completion_tokens) if mean_completion_tokens else None
    seconds: float | None = None
    if tokens_per_second:
        seconds = (expected if expected is not None else predictions * config.max_new_tokens)
        seconds /= tokens_per_second
        if expected is None:
            notes.append("time assumes every answer reaches max_new_tokens (an upper bound)")
    elif seconds_per_prediction is not None:
        seconds = predictions * seconds_per_prediction
    if training_seconds is None and seconds_per_step is not None and total is not None:
        training_seconds = total * seconds_per_step
    return _finish(
        config, Estimate(
            frequency=freq, points=points, prompts=n, predictions=predictions, total_steps=total,
            generated_tokens=predictions * config.max_new_tokens, expected_tokens=expected,
            seconds=seconds, training_seconds=training_seconds, budget=config.overhead_budget,
            notes=notes,
        ),
    )


def estimate_from_point(
    config: PredictionsConfig,
    point: EvalPoint,
    *,
    mean_completion_tokens: float | None = None,
    training_args: Mapping[str, Any] | None = None,
) -> Estimate:
    """Project a run's cost from its first evaluation point (what it measured).

    Uses the point's generation time and step, the card's ``elapsed_seconds`` (wall time since
    recording started) and ``max_steps``, and the run's training arguments. When the run's plan
    is unknown (a custom loop without ``max_steps``), ``share`` is this point's generation time
    over the training time before it: the same share when points are evenly spaced.
    """
    args = dict(training_args or {})
    gen_s = (point.generation_ms or 0.0) / 1000.0
    elapsed = point.card.get("elapsed_seconds")
    trained = (elapsed - gen_s) if isinstance(elapsed, (int, float)) else None
    measured: dict[str, Any] = {
        "prompts": point.sample_count,
        "mean_completion_tokens": mean_completion_tokens,
        "seconds_per_prediction": gen_s / point.sample_count if point.sample_count else None,
        "seconds_per_step": trained / point.step if trained and point.step > 0 else None,
        "steps_per_epoch": point.step / point.epoch if point.epoch else None,
    }
    if mean_completion_tokens and gen_s > 0:
        measured["tokens_per_second"] = mean_completion_tokens * point.sample_count / gen_s
    max_steps = point.card.get("max_steps") or args.get("max_steps")
    try:
        return estimate_cost(
            config,
            max_steps=max_steps if isinstance(max_steps, int) and max_steps > 0 else None,
            num_train_epochs=args.get("num_train_epochs"),
            eval_strategy=args.get("eval_strategy"),
            eval_steps=args.get("eval_steps"),
            **measured,
        )
    except ConfigError as exc:
        return _finish(config, Estimate(
            frequency=config.sample_frequency, points=None, prompts=point.sample_count,
            predictions=None, seconds=gen_s, training_seconds=trained,
            budget=config.overhead_budget,
            notes=[(f"the run's plan is unknown ({exc.message}); share is of the time before "
                    "the first evaluation point")],
        ))


def estimate_from_run(store: Store, run_id: str) -> Estimate:
    """``estimate_from_point`` for a stored run's first evaluation point.

    Raises:
        NotFound: No such run. DataError: The run has no evaluation point yet.
    """
    run = store.get_run(run_id)
    points = store.eval_points(run_id)
    if not points:
        raise DataError(f"run {run_id!r} has no evaluation point yet: nothing is measured")
    config = PredictionsConfig.from_dict(run.config.get("predictions") or {})
    trends = store.trends(run_id)
    mean_tokens = trends[0].avg_completion_tokens if trends else None
    return estimate_from_point(
        config, points[0], mean_completion_tokens=mean_tokens,
        training_args=run.config.get("training_args"),
    )


def warn_if_over_budget(
    config: PredictionsConfig,
    point: EvalPoint,
    completion_tokens: Sequence[int | None],
    training_args: Mapping[str, Any] | None = None,
) -> Estimate:
    """After a run's first evaluation point: project the share and log a WARNING over budget."""
    counted = [t for t in completion_tokens if t is not None]
    mean = sum(counted) / len(counted) if counted else None
    estimate = estimate_from_point(
        config, point, mean_completion_tokens=mean, training_args=training_args
    )
    if estimate.over_budget:
        log.warning("predwatch: %s", estimate.warning)
    elif estimate.share is not None:
        log.info("predwatch: predictions projected at %.1f%% of training time",
                 estimate.share * 100)
    return estimate


def stored_set_size(store: Store, config: PredictionsConfig) -> int | None:
    """Items in the stored set a ``source: set`` config names (None for other configs, a file
    path or a set the store does not have): the ``set_size`` of ``estimate_cost``."""
    if config.source != "set" or not config.set:
        return None
    from predwatch.errors import NotFound
    from predwatch.recording.set_source import is_file_ref
    from predwatch.sets import parse_ref

    if is_file_ref(config.set):
        return None
    try:
        return int(store.get_set_version(*parse_ref(config.set)).item_count)
    except (NotFound, ConfigError):
        return None


def _prompts_per_point(config: PredictionsConfig, set_size: int | None) -> int | None:
    """What a run answers at each point: a set run never more than its set's items; each
    prompt ``num_samples`` times."""
    count = config.effective_sample_count
    if config.source == "set" and set_size is not None:
        count = set_size if count is None else min(count, set_size)
    return None if count is None else count * config.num_samples


def _total_steps(
    epochs: float | None, max_steps: int | None, steps_per_epoch: float | None
) -> int | None:
    if max_steps is not None and max_steps > 0:
        return int(max_steps)
    if epochs is not None and steps_per_epoch:
        return math.ceil(epochs * steps_per_epoch)
    return None


def _epochs(
    epochs: float | None, max_steps: int | None, steps_per_epoch: float | None
) -> int | None:
    if max_steps is not None and max_steps > 0:
        return math.ceil(max_steps / steps_per_epoch) if steps_per_epoch else None
    return math.ceil(epochs) if epochs is not None else None


def _points(
    config: PredictionsConfig,
    freq: str,
    total: int | None,
    epochs: int | None,
    eval_strategy: str | None,
    eval_steps: float | None,
    notes: list[str],
) -> int:
    def need(value: T | None, what: str) -> T:
        if value is None:
            raise ConfigError(f"sample_frequency {freq!r} needs {what}",
                              detail=[{"field": what.split()[0], "reason": "missing"}])
        return value

    if freq == "epoch":
        return need(epochs, "num_train_epochs (or max_steps with steps_per_epoch)")
    if freq == "steps":
        interval = need(config.step_interval, "step_interval")
        return need(total, "max_steps (or num_train_epochs with steps_per_epoch)") // interval
    strategy = need(eval_strategy, "eval_strategy")
    if strategy == "no":
        notes.append("eval_strategy is 'no': nothing is recorded with sample_frequency 'eval'")
        return 0
    if strategy == "epoch":
        return need(epochs, "num_train_epochs (or max_steps with steps_per_epoch)")
    steps = need(total, "max_steps (or num_train_epochs with steps_per_epoch)")
    every = need(eval_steps, "eval_steps")
    interval = math.ceil(steps * every) if every < 1 else int(every)
    return steps // interval + (1 if steps % interval else 0)


def _finish(config: PredictionsConfig, estimate: Estimate) -> Estimate:
    """Fill ``share``, ``over_budget`` and ``warning``."""
    if estimate.seconds is None or not estimate.training_seconds:
        return estimate
    share = estimate.seconds / estimate.training_seconds
    over = share > config.overhead_budget
    warning = None
    if over:
        what = (f"{estimate.predictions} answers at {estimate.points} evaluation points"
                if estimate.predictions is not None else "each evaluation point")
        warning = (
            f"recording predictions is projected to take {share:.1%} of the training time "
            f"({_duration(estimate.seconds)} for {what}), over the budget of "
            f"{config.overhead_budget:.0%}: lower sample_count or max_new_tokens, record less "
            "often (sample_frequency / step_interval), or raise overhead_budget"
        )
    return estimate.model_copy(update={"share": share, "over_budget": over, "warning": warning})


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
