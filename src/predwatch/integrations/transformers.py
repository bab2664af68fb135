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

from predwatch.config import PredictionsConfig
from predwatch.recording.recorder import Recorder
from predwatch.records import Trigger

log = logging.getLogger(__name__)


class PredictionsCallback(TrainerCallback):
    """Records the model's answers at each evaluation point of a ``Trainer`` run.

    Args:
        config: a ``PredictionsConfig`` or the original system's config dict.
        dataset: where to sample prompts from (the training data: a ``datasets.Dataset``, a
            list of dicts or a file path) unless the config names ``samples_path`` or a set.
        recorder: a ready ``Recorder`` (then the remaining arguments are ignored).
        mode: ``"inline"`` (generate at each evaluation point, in the training process) or
            ``"checkpoint"`` (generate nothing here: each save queues a job in the database for
            ``predwatch worker`` to record at its step; see ``recording/deferred.py``).
        **recorder_kwargs: passed to ``Recorder`` (``db``, ``server_url``, ``token``,
            ``run_id``, ``run_name``, ``model_name``, ...).
    """

    def __init__(
        self,
        config: PredictionsConfig | Mapping[str, Any] | None = None,
        *,
        dataset: Any = None,
        recorder: Recorder | None = None,
        mode: str = "inline",
        **recorder_kwargs: Any,
    ) -> None:
        self.recorder = recorder or Recorder(config, samples=dataset, **recorder_kwargs)
        self.config = self.recorder.config
        self._active = self.config.enabled
        self._jobs = self._deferred(mode)

    # -- set-up ---------------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._active:
            return
        if not state.is_world_process_zero:
            self._active = False  # only the main process generates and writes
            return
        if self._jobs is not None:  # deferred: every save is recorded, whatever the frequency
            if self.recorder.run.model_name is None and kwargs.get("model") is not None:
                self.recorder.run.model_name = _model_name(kwargs["model"])
            self.recorder.run.config.setdefault("training_args", _training_facts(args))
            self._jobs.start()  # set-up on its thread: the training loop never waits for it
            return
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if self.config.sample_frequency == "eval" and strategy == "no":
            log.warning(
                "predwatch: sample_frequency is 'eval' but evaluation is off "
                "(eval_strategy='no'): NOTHING will be recorded. Set eval_strategy "
                "(and an eval_dataset) or use sample_frequency 'epoch' or 'steps'."
            )
        model = kwargs.get("model")
        if self.recorder.run.model_name is None and model is not None:
            self.recorder.run.model_name = _model_name(model)
        try:
            self.recorder.run.config.setdefault("training_args", _training_facts(args))
            self.recorder.start()
        except Exception:
            log.exception("predwatch: could not set up recording; this run records nothing")
            self._active = False

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
            if self._jobs is not None:
                self._jobs.close()
            self.recorder.close()
            self._active = False

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
    ) -> None:
        if not state.is_world_process_zero or self._jobs is not None:
            return  # only the main process generates and writes (also before train()); in
            # deferred mode, nobody here
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
