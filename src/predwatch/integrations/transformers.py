"""``PredictionsCallback``: predwatch for ``transformers.Trainer`` (and TRL trainers), thin.

    from predwatch import PredictionsCallback

    trainer = Trainer(..., callbacks=[PredictionsCallback({"sample_count": 8}, dataset=train_ds)])

All the work is done by ``Recorder``; this class only maps Trainer events to evaluation points:
``eval`` → after each evaluation, ``epoch`` → at each epoch end, ``steps`` → every
``step_interval`` optimizer steps; a ``trainer.evaluate()`` outside ``train()`` (before or
after it) records a point too. Under several processes (DDP, FSDP, DeepSpeed) every rank takes
part: each generates its share of the prompts, the main process alone writes, and every rank
gets the same summary (docs/distributed.md). Nothing here raises into training: set-up problems
are logged loudly and recording is switched off (on every rank alike).

Each point's summary (``integrations.metrics.point_metrics``) goes into the Trainer's logs, so
the W&B, TensorBoard, MLflow, Comet... callbacks chart it beside the loss. With ``eval``
frequency it is added to the evaluation's own metrics dict (``eval_predwatch_*``), which is the
dict the Trainer selects the best checkpoint from and ``EarlyStoppingCallback`` reads (list
``PredictionsCallback`` before ``EarlyStoppingCallback``: callbacks see events in order).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import (
    CallbackHandler,
    EarlyStoppingCallback,
    ExportableState,
)

from predwatch.config import PredictionsConfig
from predwatch.integrations.metrics import PREFIX, point_metrics
from predwatch.recording.recorder import PointSummary, Recorder
from predwatch.records import Trigger

log = logging.getLogger(__name__)


class PredictionsCallback(TrainerCallback, ExportableState):
    """Records the model's answers at each evaluation point of a ``Trainer`` run.

    Resuming (``trainer.train(resume_from_checkpoint=...)``) continues the same run: the run id
    is saved in each checkpoint's ``trainer_state.json`` (``state()``) and read back at
    ``on_train_begin``; a step recorded again after the resume is kept as a new attempt. With
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)`` the Trainer rebuilds
    each stateful callback from the checkpoint; this one is handed back itself (see
    ``__new__``), so it keeps its prompts, database and config.

    Args:
        config: a ``PredictionsConfig`` or the original system's config dict.
        dataset: where to sample prompts from (the training data: a ``datasets.Dataset``, a
            list of dicts or a file path) unless the config names ``samples_path`` or a set.
        recorder: a ready ``Recorder`` (then the remaining arguments are ignored).
        log_metrics: add each point's summary to the Trainer's logs (and, with ``eval``
            frequency, to the evaluation's metrics).
        mode: ``"inline"`` (generate at each evaluation point, in the training process) or
            ``"checkpoint"`` (generate nothing here: each save queues a job in the database for
            ``predwatch worker`` to record at its step; see ``recording/deferred.py``).
        **recorder_kwargs: passed to ``Recorder`` (``db``, ``server_url``, ``token``,
            ``run_id``, ``run_name``, ``model_name``, ...).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> PredictionsCallback:
        # restore_callback_states_from_checkpoint=True: the Trainer replaces each stateful
        # callback with ``type(callback)(**saved_args)`` and sets the saved attributes on it.
        # Built from nothing, that would be a callback without the user's prompts, database or
        # config (it recorded nothing). Hand the Trainer the callback it is replacing instead:
        # it removes and re-adds that same object and sets ``saved_run_id`` on it.
        if not args and not kwargs:
            replaced = _replaced_by_trainer(cls)
            if replaced is not None:
                replaced.__dict__["_restoring"] = True  # __init__ then leaves it as it is
                return replaced
        return super().__new__(cls)

    def __init__(
        self,
        config: PredictionsConfig | Mapping[str, Any] | None = None,
        *,
        dataset: Any = None,
        recorder: Recorder | None = None,
        log_metrics: bool = True,
        mode: str = "inline",
        **recorder_kwargs: Any,
    ) -> None:
        if self.__dict__.pop("_restoring", False):
            return  # the Trainer restoring this callback from a checkpoint: it is set up
        self.recorder = recorder or Recorder(config, samples=dataset, **recorder_kwargs)
        self.config = self.recorder.config
        self.log_metrics = log_metrics
        self._active = self.config.enabled
        # What a recorder for an evaluate() after train() is built from (the first is closed).
        self._dataset = dataset
        self._recorder_kwargs = recorder_kwargs if recorder is None else None
        self._training = False
        self._train_ended = False
        self._points: dict[int, PointSummary] = {}  # by step, over every recorder of the run
        self._jobs = self._deferred(mode)

    # -- set-up ---------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = True  # (a second train() after the first records nothing, as before)
        if not self._active:
            return
        if _uncoordinated(state):
            self._active = False  # see _uncoordinated
            return
        if self._jobs is not None:  # deferred: every save is recorded, whatever the frequency
            if self.recorder.run.model_name is None and kwargs.get("model") is not None:
                self.recorder.run.model_name = _model_name(kwargs["model"])
            self.recorder.run.config.setdefault("training_args", _training_facts(args))
            self._jobs.start()  # set-up on its thread: the training loop never waits for it
            return
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if self.config.sample_frequency == "eval" and strategy == "no" and (
            state.is_world_process_zero
        ):
            log.warning(
                "predwatch: sample_frequency is 'eval' but evaluation is off "
                "(eval_strategy='no'): NOTHING will be recorded. Set eval_strategy "
                "(and an eval_dataset) or use sample_frequency 'epoch' or 'steps'."
            )
        self._resume(state)
        self._describe_run(args, kwargs.get("model"))
        self._check_callback_order(args)
        try:
            self.recorder.start()  # collective under several processes: every rank is here
        except Exception:
            log.exception("predwatch: could not set up recording; this run records nothing")
            self._active = False

    # -- checkpoint state (transformers' ExportableState) --------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the run this training job records into."""
        return {"args": {}, "attributes": {"saved_run_id": self.recorder.run.id}}

    @property
    def saved_run_id(self) -> str:
        """The run this training job records into (kept in each checkpoint)."""
        return self.recorder.run.id

    @saved_run_id.setter
    def saved_run_id(self, value: Any) -> None:
        # Set by the Trainer restoring callback states from the checkpoint it resumes from.
        if isinstance(value, str) and value:
            self.recorder.resume(value)

    def _resume(self, state: TrainerState) -> None:
        """On a resumed job, continue the checkpoint's run. The Trainer has loaded the
        checkpoint's ``stateful_callbacks`` into ``state`` before ``on_train_begin``; our entry
        is (re)set there so the next checkpoint has one (a checkpoint saved without this
        callback has none, and the Trainer's save expects it)."""
        name = type(self).__name__
        stored: Any = state.stateful_callbacks  # a dict once the TrainerState exists
        if not isinstance(stored, dict):
            return
        saved = stored.get(name)
        attributes = saved.get("attributes") if isinstance(saved, dict) else None
        saved_id = attributes.get("saved_run_id") if isinstance(attributes, dict) else None
        if isinstance(saved_id, str) and saved_id and state.global_step > 0:
            self.recorder.resume(saved_id)
            log.info("predwatch: resumed training continues run %s", self.recorder.run.id)
        stored[name] = self.state()

    # -- evaluation points --------------------------------------------------------------------
    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Outside train() (a trainer.evaluate() before or after it) an evaluation is a point
        # whatever the frequency: it is the user asking for one.
        if not self.config.enabled or _uncoordinated(state):
            return
        outside = not self._training
        if self.config.sample_frequency != "eval" and not outside:
            return
        summary = self._evaluation_point(args, state, control, kwargs, outside)
        metrics = kwargs.get("metrics")
        if self.log_metrics and isinstance(metrics, dict):
            self._add_to_eval_metrics(args, state, control, metrics, summary)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._active and self.config.sample_frequency == "epoch":
            summary = self._record(args, state, control, Trigger.EPOCH, kwargs)
            self._log_point(args, state, control, summary)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        interval = self.config.step_interval or 0
        if (
            self._active
            and self.config.sample_frequency == "steps"
            and interval
            and state.global_step > 0
            and state.global_step % interval == 0
        ):
            summary = self._record(args, state, control, Trigger.STEPS, kwargs)
            self._log_point(args, state, control, summary)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = False
        if self._active:
            if self._jobs is not None:
                self._jobs.close()
            self.recorder.close()  # (a no-op on ranks other than the main one: they write nothing)
            self._active = False
            self._train_ended = True

    # -- deferred mode: checkpoints become jobs for a worker -----------------------------------
    def _deferred(self, mode: str) -> Any:
        if mode not in ("inline", "checkpoint"):
            raise ValueError(f"mode must be 'inline' or 'checkpoint', not {mode!r}")
        if mode == "inline":
            return None
        from predwatch.recording.deferred import JobSender

        return JobSender(self.recorder)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._jobs is None or not self._active or not state.is_world_process_zero:
            return
        # on_save runs after the Trainer wrote the checkpoint, trainer_state.json last.
        path = os.path.join(args.output_dir or ".", f"checkpoint-{state.global_step}")
        self._jobs.submit(state.global_step, path, {
            "global_step": state.global_step, "epoch": state.epoch,
            "max_steps": state.max_steps, "num_train_epochs": state.num_train_epochs,
        })

    # -- internals ---------------------------------------------------------------------------
    def _record(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        trigger: Trigger,
        kwargs: dict[str, Any],
    ) -> PointSummary | None:
        if self._jobs is not None:
            return None  # deferred mode: a worker records from the checkpoints, nobody here
        # Every rank gets here (each generates its share; the recorder writes on the main
        # process only), and every rank takes the same path: the cache and the checks below
        # depend on nothing rank-specific.
        if _uncoordinated(state):
            return None
        if state.global_step in self._points:
            # The same step again (a second eval dataset, or evaluate() right after train()):
            # the point is recorded; its summary still goes with these metrics.
            log.info("predwatch: step %s is already recorded; not recording it again",
                     state.global_step)
            return self._points[state.global_step]
        model = kwargs.get("model")
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        if model is None or tokenizer is None:
            log.error(
                "predwatch: the trainer gave no %s at step %s; skipped this evaluation point",
                "model" if model is None else "tokenizer (processing_class)", state.global_step,
            )
            return None
        checkpoint = None
        if control.should_save and args.output_dir:
            # The trainer saves right after this event: record where, so it can be reproduced.
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        summary = self.recorder.record(
            model, tokenizer, step=state.global_step, epoch=state.epoch, trigger=trigger,
            precision="bf16" if args.bf16 else "fp16" if args.fp16 else None,
            checkpoint=checkpoint,
            extra_card={"world_size": args.world_size, "max_steps": state.max_steps},
        )
        if summary is not None:
            self._points[state.global_step] = summary
        return summary

    def _evaluation_point(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        kwargs: dict[str, Any],
        outside: bool,
    ) -> PointSummary | None:
        if state.global_step in self._points:
            return self._record(args, state, control, Trigger.EVAL, kwargs)  # (the cached one)
        after_train = outside and self._train_ended
        if after_train and not self._reopen():
            return None
        if not (self._active or outside):
            return None  # set-up failed (logged); training goes on
        loader = kwargs.get("eval_dataloader")
        if loader is not None and _is_empty(loader):
            log.warning("predwatch: the evaluation set is empty; recording anyway")
        if outside:
            self._describe_run(args, kwargs.get("model"))
        summary = self._record(args, state, control, Trigger.EVAL, kwargs)
        if after_train:
            self.recorder.close()  # nothing else comes after train(): deliver it now
        return summary

    # -- the run's description (also for an evaluate() before train()) -------------------------
    def _describe_run(self, args: TrainingArguments, model: Any) -> None:
        """Model name and training arguments, before the run is opened (so they are stored)."""
        run = self.recorder.run
        if run.model_name is None and model is not None:
            run.model_name = _model_name(model)
        run.config.setdefault("training_args", _training_facts(args))

    def _reopen(self) -> bool:
        """A recorder continuing the run, for an evaluate() after train() closed the first."""
        if self._recorder_kwargs is None or "sink" in self._recorder_kwargs:
            log.warning(
                "predwatch: trainer.evaluate() after train() is not recorded: the recorder "
                "passed in is closed and cannot be reopened (pass its settings instead)"
            )
            return False
        old = self.recorder
        kwargs = {
            **self._recorder_kwargs, "run_id": old.run.id, "run_name": old.run.name,
            "model_name": old.run.model_name, "base_model": old.run.base_model,
            "run_config": {k: v for k, v in old.run.config.items() if k != "predictions"},
        }
        try:
            self.recorder = Recorder(self.config, samples=self._dataset, **kwargs)
        except Exception:
            log.exception("predwatch: could not record this evaluate() after train()")
            return False
        self._active = True
        return True

    # -- predwatch's summary in the Trainer's logs (trackers, best model, early stopping) ------
    def _add_to_eval_metrics(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any],
        summary: PointSummary | None,
    ) -> None:
        """Put the point's summary into the evaluation's metrics, in place.

        The Trainer selects the best checkpoint from this very dict (and returns it from
        ``evaluate()``), and later callbacks (``EarlyStoppingCallback``) read it. It has already
        been logged when ``on_evaluate`` runs, so the summary is also added to that entry of
        ``log_history`` and sent to the trackers' ``on_log`` as a log of its own.
        """
        prefix = _metric_prefix(metrics)
        values = self._tracker_values(summary)
        if not values:
            values = self._placeholder(args, prefix, state.global_step)
        added = {f"{prefix}_{key}": value for key, value in values.items()}
        metrics.update(added)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and any(
            key.startswith(prefix + "_") for key in last
        ):
            last.update(added)
        else:
            state.log_history.append({**added, "step": state.global_step})
        self._to_trackers(args, state, control, added)

    def _log_point(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        summary: PointSummary | None,
    ) -> None:
        """A point outside evaluation (``epoch``/``steps``): a log entry of its own."""
        values = self._tracker_values(summary) if self.log_metrics else {}
        if not values:
            return
        logs: dict[str, Any] = dict(values)
        if state.epoch is not None:
            logs["epoch"] = state.epoch
        state.log_history.append({**logs, "step": state.global_step})  # as Trainer.log does
        self._to_trackers(args, state, control, logs)

    def _tracker_values(self, summary: PointSummary | None) -> dict[str, Any]:
        if summary is None:
            return {}
        values: dict[str, Any] = dict(point_metrics(summary))
        url = self._point_url(summary.step)
        if url is not None:
            values[PREFIX + "url"] = url
        return values

    def _point_url(self, step: int) -> str | None:
        """The point's page in the predwatch UI, when the run goes to a server."""
        server = self.recorder.settings.server_url
        if not server:
            return None
        run_id = self.recorder.sink.run_id or self.recorder.run.id  # the server's, once known
        return f"{server.rstrip('/')}/runs/{run_id}?step={step}"

    def _placeholder(self, args: TrainingArguments, prefix: str, step: int) -> dict[str, Any]:
        """No summary at this point (recording failed or is off): when the best checkpoint is
        chosen by a predwatch metric, give it the worst value rather than leave it out, which
        would make the Trainer raise a KeyError into training."""
        wanted = args.metric_for_best_model or ""
        key = wanted.removeprefix(prefix + "_").removeprefix("eval_")
        if not key.startswith(PREFIX):
            return {}
        worst = -math.inf if args.greater_is_better else math.inf
        log.error(
            "predwatch: no predictions at step %s, so %s is set to %s for best-model "
            "selection (this checkpoint cannot be chosen as the best)", step, wanted, worst,
        )
        return {key: worst}

    def _to_trackers(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any],
    ) -> None:
        """Hand ``logs`` to every callback's ``on_log`` (W&B, TensorBoard, MLflow...).

        A callback gets no handle on its trainer; the handler that is calling this event does
        (``CallbackHandler.call_event``), so it is found on the call stack. Without it (the
        callback driven by hand) the values stay in ``log_history`` only.
        """
        handler = _calling_handler()
        if handler is None:
            log.debug("predwatch: no Trainer callback handler found; metrics kept in log_history")
            return
        # CallbackHandler.on_log clears should_log: keep the Trainer's own pending log (the
        # loss at this epoch end or step) from being skipped.
        pending = control.should_log
        handler.on_log(args, state, control, logs)
        control.should_log = pending

    def _check_callback_order(self, args: TrainingArguments) -> None:
        handler = _calling_handler()
        if handler is None or not self.log_metrics:
            return
        callbacks = list(handler.callbacks)
        mine = callbacks.index(self) if self in callbacks else -1
        early = [i for i, cb in enumerate(callbacks) if isinstance(cb, EarlyStoppingCallback)]
        if mine >= 0 and early and early[0] < mine and PREFIX in (args.metric_for_best_model or ""):
            log.warning(
                "predwatch: EarlyStoppingCallback comes before PredictionsCallback, so it looks "
                "for %s before predwatch has added it and stops nothing; list "
                "PredictionsCallback first in callbacks=[...]", args.metric_for_best_model,
            )


def _uncoordinated(state: TrainerState) -> bool:
    """A process the Trainer says is not the main one, without a ``torch.distributed`` group to
    share a point through (e.g. XLA): it records nothing, and the main process records alone."""
    from predwatch.generation.distributed import rank_info

    return not state.is_world_process_zero and not rank_info().distributed


def _replaced_by_trainer(cls: type[PredictionsCallback]) -> PredictionsCallback | None:
    """The callback ``Trainer._load_callback_state`` is replacing with a new ``cls()``, when
    that is who is constructing one (its loop variable ``callback``), else None."""
    frame = sys._getframe(2)  # (1 is __new__; 2 is whoever called the class)
    for _ in range(3):
        if frame is None:
            return None
        if frame.f_code.co_name == "_load_callback_state":
            found = frame.f_locals.get("callback")
            return found if isinstance(found, cls) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _calling_handler() -> CallbackHandler | None:
    """The ``CallbackHandler`` whose ``call_event`` is running this callback's event, if any."""
    frame = sys._getframe(1)
    for _ in range(8):  # call_event -> on_<event> -> our helpers: a few frames up
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, CallbackHandler):
            return owner
    return None


def _metric_prefix(metrics: Mapping[str, Any]) -> str:
    """The evaluation's ``metric_key_prefix`` ("eval", or "eval_<name>" for several eval sets),
    read from the runtime key every evaluation has."""
    for key in metrics:
        if key.endswith("_runtime"):
            return key.removesuffix("_runtime")
    return "eval"


def _model_name(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or type(model).__name__


def _training_facts(args: TrainingArguments) -> dict[str, Any]:
    keep = (
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "seed", "bf16", "fp16", "eval_strategy", "eval_steps",
        "output_dir",
    )
    return {k: _jsonable(getattr(args, k, None)) for k in keep}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))


def _is_empty(loader: Any) -> bool:
    try:
        return len(loader) == 0
    except TypeError:
        return False
