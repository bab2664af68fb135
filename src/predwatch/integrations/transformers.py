"""``PredictionsCallback``: predwatch for ``transformers.Trainer`` (and TRL trainers), thin.

    from predwatch import PredictionsCallback

    trainer = Trainer(..., callbacks=[PredictionsCallback({"sample_count": 8}, dataset=train_ds)])

All the work is done by ``Recorder``; this class only maps Trainer events to evaluation points:
``eval`` → after each evaluation, ``epoch`` → at each epoch end, ``steps`` → every
``step_interval`` optimizer steps. Only the main process records. Nothing here raises into
training: set-up problems are logged loudly and recording is switched off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from predwatch.config import PredictionsConfig
from predwatch.recording.recorder import Recorder
from predwatch.records import Trigger

log = logging.getLogger(__name__)


class PredictionsCallback(TrainerCallback, ExportableState):
    """Records the model's answers at each evaluation point of a ``Trainer`` run.

    Resuming (``trainer.train(resume_from_checkpoint=...)``) continues the same run: the run id
    is saved in each checkpoint's ``trainer_state.json`` (``state()``) and read back at
    ``on_train_begin``; a step recorded again after the resume is kept as a new attempt.

    Args:
        config: a ``PredictionsConfig`` or the original system's config dict.
        dataset: where to sample prompts from (the training data: a ``datasets.Dataset``, a
            list of dicts or a file path) unless the config names ``samples_path`` or a set.
        recorder: a ready ``Recorder`` (then the remaining arguments are ignored).
        **recorder_kwargs: passed to ``Recorder`` (``db``, ``server_url``, ``token``,
            ``run_id``, ``run_name``, ``model_name``, ...).
    """

    def __init__(
        self,
        config: PredictionsConfig | Mapping[str, Any] | None = None,
        *,
        dataset: Any = None,
        recorder: Recorder | None = None,
        **recorder_kwargs: Any,
    ) -> None:
        self.recorder = recorder or Recorder(config, samples=dataset, **recorder_kwargs)
        self.config = self.recorder.config
        self._active = self.config.enabled

    # -- set-up ---------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._active:
            return
        if not state.is_world_process_zero:
            self._active = False  # only the main process generates and writes
            return
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if self.config.sample_frequency == "eval" and strategy == "no":
            log.warning(
                "predwatch: sample_frequency is 'eval' but evaluation is off "
                "(eval_strategy='no'): NOTHING will be recorded. Set eval_strategy "
                "(and an eval_dataset) or use sample_frequency 'epoch' or 'steps'."
            )
        self._resume(state)
        model = kwargs.get("model")
        if self.recorder.run.model_name is None and model is not None:
            self.recorder.run.model_name = _model_name(model)
        try:
            self.recorder.run.config.setdefault("training_args", _training_facts(args))
            self.recorder.start()
        except Exception:
            log.exception("predwatch: could not set up recording; this run records nothing")
            self._active = False

    # -- checkpoint state (transformers' ExportableState) --------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the run this training job records into."""
        return {"args": {}, "attributes": {"saved_run_id": self.recorder.run.id}}

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
        if self._active and self.config.sample_frequency == "eval":
            loader = kwargs.get("eval_dataloader")
            if loader is not None and _is_empty(loader):
                log.warning("predwatch: the evaluation set is empty; recording anyway")
            self._record(args, state, control, Trigger.EVAL, kwargs)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._active and self.config.sample_frequency == "epoch":
            self._record(args, state, control, Trigger.EPOCH, kwargs)

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
            self._record(args, state, control, Trigger.STEPS, kwargs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._active and state.is_world_process_zero:
            self.recorder.close()
            self._active = False

    # -- internals ---------------------------------------------------------------------------
    def _record(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        trigger: Trigger,
        kwargs: dict[str, Any],
    ) -> None:
        if not state.is_world_process_zero:
            return  # only the main process generates and writes (also before train())
        model = kwargs.get("model")
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        if model is None or tokenizer is None:
            log.error(
                "predwatch: the trainer gave no %s at step %s; skipped this evaluation point",
                "model" if model is None else "tokenizer (processing_class)", state.global_step,
            )
            return
        checkpoint = None
        if control.should_save and args.output_dir:
            # The trainer saves right after this event: record where, so it can be reproduced.
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.recorder.record(
            model, tokenizer, step=state.global_step, epoch=state.epoch, trigger=trigger,
            precision="bf16" if args.bf16 else "fp16" if args.fp16 else None,
            checkpoint=checkpoint,
            extra_card={"world_size": args.world_size, "max_steps": state.max_steps},
        )


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
