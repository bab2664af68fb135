"""The whole recording pipeline, framework-free: samples → generate → score → validate → sink.

``Recorder`` is what the Trainer callback wraps and what a custom (e.g. Accelerate) loop calls
directly::

    recorder = Recorder({"sample_count": 8}, samples="train.jsonl", db="sqlite:///predwatch.db")
    for step in ...:
        ...
        if step % 100 == 0:
            recorder.record(model, tokenizer, step=step, epoch=step / steps_per_epoch)
    recorder.close()

``record`` never raises into the training loop: it is the training boundary, and the one place
with a broad ``except`` (it logs the traceback once, at error level, and says what was skipped).
Rows are handed to a sink (``predwatch.delivery``): ``record`` spools them (fsync) and returns
as soon as generation and scoring are done; the sink's own thread opens the run and stores them.

Under ``torch.distributed`` (DDP, FSDP, ZeRO-3, Accelerate) every rank calls ``record``: each
generates its share of the prompts (``generation.distributed``), the main process alone loads the
prompts (broadcast to the others once), opens the run, scores and writes. Before each point the
ranks agree to record it, so a point skipped on one rank is skipped on all (docs/distributed.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from predwatch.config import RECORDER_SETTINGS, PredictionsConfig, Settings
from predwatch.delivery.base import Sink
from predwatch.generation.base import Generator
from predwatch.generation.distributed import (
    RankInfo,
    ShardedGenerator,
    agree,
    broadcast_from_main,
    generation_model,
    process_group_timeout_s,
    rank_info,
    training_precision,
)
from predwatch.records import (
    CORE_METRICS,
    EvalPoint,
    Generation,
    Prediction,
    Run,
    Sample,
    Trigger,
)

if TYPE_CHECKING:
    from predwatch.recording.sources import BackgroundLoad

log = logging.getLogger(__name__)

# A recorder whose set-up failed (say the server was down) retries it at a later evaluation
# point, after 60 s, then 120 s, ... at most 15 minutes: not at every point, each of which
# would wait for the connection attempts.
START_RETRY_S = 60.0
START_RETRY_MAX_S = 900.0
# A stored set is read on a thread of its own; ``start`` and then each evaluation point wait at
# most this long for it (a point that finds it still loading is skipped, and says so).
SAMPLES_WAIT_S = 1.0

ConfigLike = PredictionsConfig | Mapping[str, Any] | None


@dataclass
class PointSummary:
    """What one evaluation point produced (for progress tables and tests).

    ``predictions`` holds the point's rows on the summary ``record`` returns and on the
    recorder's latest summary; older summaries keep only their numbers.
    """

    step: int
    epoch: float | None
    trigger: str
    sample_count: int
    failed_count: int
    generation_ms: float
    exact_match: float | None = None
    char_error_rate: float | None = None
    validation_pass_rate: float | None = None
    # num_samples > 1: pass@k and disagreement, mean over prompts (``scoring.samples``)
    sample_metrics: dict[str, float] = field(default_factory=dict)
    predictions: list[Prediction] = field(default_factory=list, repr=False)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


class Recorder:
    """Records a model's answers to a fixed set of prompts at each evaluation point.

    Args:
        config: a ``PredictionsConfig`` or the original system's config dict.
        samples: where prompts come from when ``config`` names none: a file path, a list of
            dicts, or a ``datasets.Dataset`` (sampled reproducibly with ``config.seed``).
        sink: where rows go; by default a store sink on ``db`` or, when ``server_url`` is set,
            the ingest API authenticated with ``token``.
        db: database URL (default ``PREDWATCH_DATABASE_URL`` or ``sqlite:///predwatch.db``).
        server_url / token: send to a predwatch server instead (``PREDWATCH_SERVER_URL`` /
            ``PREDWATCH_RUN_TOKEN``).
        run_id / run_name / model_name / base_model: describe the run (an id is generated
            when none is given; with a server the token decides the run).
    """

    def __init__(
        self,
        config: ConfigLike = None,
        *,
        samples: Any = None,
        sink: Sink | None = None,
        db: str | None = None,
        server_url: str | None = None,
        token: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        model_name: str | None = None,
        base_model: str | None = None,
        spool_dir: str | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = (
            config if isinstance(config, PredictionsConfig) else PredictionsConfig.from_dict(config)
        )
        self.settings = Settings.from_env(
            only=RECORDER_SETTINGS, database_url=db, server_url=server_url, run_token=token,
            spool_dir=spool_dir,
        )
        self._samples_source = samples
        self._sink = sink
        self.run = Run(
            id=run_id or uuid.uuid4().hex,
            name=run_name,
            model_name=model_name,
            base_model=base_model,
            config={"predictions": self.config.model_dump(mode="json"), **dict(run_config or {})},
        )
        self._run_id_given = run_id is not None
        # This recorder's id on every point it writes: the store numbers a step recorded again
        # by another writer (a resumed run) as a new attempt, and dedupes this writer's re-sends.
        self.writer = uuid.uuid4().hex
        self.samples: list[Sample] = []
        self.summaries: list[PointSummary] = []
        self._recorded_steps: set[int] = set()
        self._started = False
        self._disabled = not self.config.enabled
        self._closed = False
        self._static_card: dict[str, Any] = {}
        self._started_at: float | None = None  # perf_counter() at start (cost estimates)
        self._start_failures = 0
        self._retry_start_at = 0.0  # monotonic time before which a failed start is not retried
        self._ranks = RankInfo()  # set at start: torch.distributed may start after __init__
        self._timeout_warned = False
        self._loading: BackgroundLoad | None = None  # the prompts (a stored set) being read
        self._loading_reported = False  # "still being read" said (once)
        self._skipped_loading = 0  # points skipped while the prompts were being read
        if sink is None and not self._disabled:
            from predwatch.delivery import preload

            preload(self.settings)  # the storage stack's imports, before training starts

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def sink(self) -> Sink:
        """Where rows go (built on first use; it connects nothing on this thread)."""
        if self._sink is None:
            from predwatch.delivery import open_sink

            self._sink = open_sink(self.settings)
        return self._sink

    def resume(self, run_id: str) -> None:
        """Continue the run ``run_id`` (a training job resumed from a checkpoint) instead of
        starting a new one; a run id given to the constructor wins. Call before ``start``."""
        if self._started or self._run_id_given:
            return
        self.run = self.run.model_copy(update={"id": run_id})

    def start(self, samples: Any = None, *, block: bool = False) -> list[Sample]:
        """Load the prompts and open the run. Raises on bad input (call before training).

        Under several processes every rank must call it (it is collective): the main process
        loads the prompts and opens the run; the others receive the prompts and open nothing.

        A stored set (``source: set``) is read on a thread of its own: ``start`` waits for it
        at most ``SAMPLES_WAIT_S``, then returns an empty list and the recorder is not started
        yet; each evaluation point waits for it as long again (and is skipped, logged, while
        it still loads). A set that cannot be read is logged at once, raised by the next
        ``start`` (a point retries later). Under several processes, and with ``block`` (callers
        off the training thread), it is read here and ``start`` waits for it.
        """
        if self._started:
            return self.samples
        from predwatch.recording.sources import dropped_content_card
        from predwatch.scoring.metrics import resolve_scorers
        from predwatch.scoring.validators import build_validators

        ranks = rank_info()
        problem: BaseException | None = None
        loaded: list[Sample] | None = None
        try:
            # A bad metric name or validator spec fails here, before training, not at every point.
            resolve_scorers(self.config.metrics)
            build_validators(self.config.validators.specs())
            if ranks.is_main:
                source = samples if samples is not None else self._samples_source
                loaded = self._load_samples(source,
                                            background=not (ranks.distributed or block))
                if loaded is None:
                    return []  # still loading on its thread: the next point waits for it
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks know
            problem = exc
        if ranks.distributed:
            # One broadcast: every rank answers exactly the main process's prompts, even when
            # the source is streamed, sampled or too big to load on every rank.
            shared = broadcast_from_main(
                None if problem is not None else (loaded, self.run.id))
            if not agree(problem is None and shared is not None):
                if problem is not None:
                    raise problem
                raise RuntimeError("another rank could not set up recording (see its log)")
            loaded, run_id = shared
            if not ranks.is_main:  # every rank names the one run (e.g. in its logs)
                self.run = self.run.model_copy(update={"id": run_id})
        elif problem is not None:
            raise problem
        assert loaded is not None
        self.samples = loaded
        self._ranks = ranks
        if ranks.is_main:
            # Returns at once: the run is opened (connection, schema, server handshake) on the
            # delivery thread, and points recorded meanwhile wait in the spool.
            self.run = self.sink.open_run(self.run)
        self._static_card = {**_static_card(), **dropped_content_card(self.samples)}
        self._started_at = time.perf_counter()
        self._started = True
        if ranks.is_main:
            draws = self.config.num_samples
            log.info(
                "predwatch: recording %d prompts%s per evaluation point into run %s%s",
                len(self.samples),
                f" x {draws} answers ({len(self.samples) * draws} answers)" if draws > 1 else "",
                self.run.id,
                f" ({ranks.world_size} ranks share each point)" if ranks.distributed else "",
            )
        return self.samples

    def _load_samples(self, source: Any, *, background: bool) -> list[Sample] | None:
        """The prompts, or None while a stored set is still being read on its thread."""
        from predwatch.recording.sources import BackgroundLoad, load_samples, reads_store

        if not (background and reads_store(self.config, source)):
            return load_samples(self.config, source, settings=self.settings)
        if self._loading is None:
            from predwatch.delivery.store import spool_target

            where = self.settings.server_url or spool_target(self.settings.database_url)
            self._loading = BackgroundLoad(
                lambda: load_samples(self.config, source, settings=self.settings),
                f"set {self.config.set or self.config.samples_path!r} from {where}")
        loading = self._loading
        try:
            found = loading.wait(SAMPLES_WAIT_S)
        except Exception:
            self._loading = None  # the next start reads it again
            raise
        if found is None:
            if not self._loading_reported:
                self._loading_reported = True
                log.warning("predwatch: the prompts (%s) are still being read after %.0fs; "
                            "recording starts once they are, evaluation points meanwhile are "
                            "skipped", loading.what, SAMPLES_WAIT_S)
            return None
        self._loading = None
        return found

    def close(self, *, status: str = "finished", timeout: float | None = None) -> int:
        """Mark the run ``status`` and deliver what is queued (bounded wait); never raises.

        The run's finish is spooled like a point, after the last one: a destination that is
        down now gets it later (the worker's retries while the process lives, then
        ``predwatch replay``). Returns the number of batches still undelivered (kept in the
        spool; the finish counts as one).
        """
        if self._closed or self._sink is None:
            return 0
        self._closed = True
        timeout = self.settings.delivery_timeout_seconds if timeout is None else timeout
        try:
            if self._started and self._ranks.is_main:
                self.sink.finish_run(self.run.id, status)
            remaining = self.sink.close(timeout=timeout)
            confirmed = self.sink.run_id  # the destination's run (a token's may differ)
            if confirmed is not None and confirmed != self.run.id:
                self.run = self.run.model_copy(update={"id": confirmed})
            return remaining
        except Exception:
            log.exception("predwatch: error while closing the recorder (rows are in the spool)")
            return -1

    # -- recording -----------------------------------------------------------------------------
    def record(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        step: int,
        epoch: float | None = None,
        trigger: Trigger | str = Trigger.MANUAL,
        generator: Generator | None = None,
        precision: str | None = None,
        checkpoint: str | None = None,
        extra_card: Mapping[str, Any] | None = None,
    ) -> PointSummary | None:
        """Generate, score, validate and hand one evaluation point to the sink.

        Pass a model and tokenizer (an ``HFGenerator`` is built) or a ready ``generator``.
        Returns a summary, or None when nothing was recorded (disabled, step already recorded,
        or a failure — which is logged with its traceback, never raised).
        """
        ranks = rank_info()
        wanted = self._wants(step)
        if ranks.distributed:
            try:
                everyone = agree(wanted)
            except Exception:  # e.g. only the main process calls record: a collective timeout
                log.exception("predwatch: the ranks could not agree on step %s (every rank must "
                              "call record); skipped", step)
                return None
            if not everyone:
                # A point skipped on one rank is skipped on every rank: the others would wait
                # in its gather forever.
                if wanted:
                    log.warning("predwatch: another rank skips step %s; skipped here too", step)
                return None
        if not wanted:
            return None
        summary: PointSummary | None = None
        try:
            summary = self._set_up_and_record(
                model, tokenizer, step=step, epoch=epoch, trigger=trigger, generator=generator,
                precision=precision, checkpoint=checkpoint, extra_card=extra_card,
            )
        except Exception:
            log.exception(
                "predwatch: recording failed at step %s; skipped this evaluation point "
                "(%d prompts); training continues",
                step, len(self.samples),
            )
        if ranks.distributed and self._started:
            summary = self._share_summary(summary)
        return summary

    def _wants(self, step: int) -> bool:
        """Whether this process would record ``step`` (before the ranks agree on it)."""
        if self._disabled or self._closed:
            return False
        if step in self._recorded_steps:
            log.debug("predwatch: step %s already recorded; skipped", step)
            return False
        if not self._started and time.monotonic() < self._retry_start_at:
            log.debug("predwatch: not set up yet (retrying later); step %s skipped", step)
            return False
        return True

    def _set_up_and_record(
        self,
        model: Any,
        tokenizer: Any,
        *,
        step: int,
        epoch: float | None,
        trigger: Trigger | str,
        generator: Generator | None,
        precision: str | None,
        checkpoint: str | None,
        extra_card: Mapping[str, Any] | None,
    ) -> PointSummary | None:
        if not self._started:
            try:
                self.start()
            except Exception:
                # e.g. the server is down: do not make every evaluation point wait for it.
                self._start_failures += 1
                wait = min(START_RETRY_MAX_S, START_RETRY_S * 2 ** (self._start_failures - 1))
                self._retry_start_at = time.monotonic() + wait
                log.exception(
                    "predwatch: could not set up recording (attempt %d); step %s skipped, "
                    "the next attempt is in %.0fs at the earliest; training continues",
                    self._start_failures, step, wait,
                )
                return None
            if not self._started:  # the prompts are still being read (bounded wait)
                self._skipped_loading += 1
                log.info("predwatch: step %s skipped: the prompts are still being read (%d "
                         "point(s) skipped so far)", step, self._skipped_loading)
                return None
        self._recorded_steps.add(step)
        ranks = self._ranks
        built: Any = None
        problem: BaseException | None = None
        try:
            built = generator if generator is not None else self._hf_generator(
                model, tokenizer, precision)
        except Exception as exc:  # noqa: BLE001 - re-raised below, once every rank knows
            problem = exc
        if ranks.distributed:
            if not agree(problem is None):
                if problem is not None:
                    raise problem
                log.error("predwatch: another rank could not build its generator at step %s; "
                          "skipped this evaluation point on every rank", step)
                return None
            if not isinstance(built, ShardedGenerator):
                built = ShardedGenerator(built, model=model, ranks=ranks)
        elif problem is not None:
            raise problem
        return self._record(
            built, step=step, epoch=epoch, trigger=Trigger(trigger),
            checkpoint=checkpoint, extra_card=dict(extra_card or {}),
        )

    @staticmethod
    def _hf_generator(model: Any, tokenizer: Any, precision: str | None) -> Any:
        from predwatch.generation.hf import HFGenerator

        # A loop holds the model wrapped (DDP, accelerator.prepare, torch.compile); generate
        # with what is inside, in the precision the loop trains in (Accelerate's autocast).
        return HFGenerator(generation_model(model), tokenizer,
                           precision=precision or training_precision(model))

    def _share_summary(self, summary: PointSummary | None) -> PointSummary | None:
        """The main process's summary (rows included) on every rank, so every rank logs the
        same metrics: the Trainer's best-checkpoint choice and early stopping agree."""
        try:
            shared = broadcast_from_main(summary)
        except Exception:
            log.exception("predwatch: could not share the point's summary between ranks")
            return summary
        if self._ranks.is_main:
            return summary
        if isinstance(shared, PointSummary):
            self.summaries.append(shared)
            return shared
        return None

    def _record(
        self,
        generator: Generator,
        *,
        step: int,
        epoch: float | None,
        trigger: Trigger,
        checkpoint: str | None,
        extra_card: dict[str, Any],
    ) -> PointSummary | None:
        from predwatch.scoring import run_validators, score_prediction

        params = self.config.generation_params()
        asked = self._expanded()
        started = time.perf_counter()
        generations: list[Generation] = generator.generate(asked, params)
        generation_ms = (time.perf_counter() - started) * 1000.0
        if not self._ranks.is_main:
            return None  # this rank answered its share; the main process scores and writes
        if len(generations) != len(asked):
            raise RuntimeError(
                f"generator returned {len(generations)} answers for {len(asked)} prompts"
            )
        described = _safe_describe(generator)
        from predwatch.repro.card import point_facts

        inner = generator.inner if isinstance(generator, ShardedGenerator) else generator
        card = {
            **self._static_card,
            **described,
            **point_facts(inner, params),
            "elapsed_seconds": time.perf_counter() - (self._started_at or started),
            "generation_params": params,
            "step": step,
            "epoch": epoch,
            "checkpoint": checkpoint,
            "sample_count": len(self.samples),
            **self._samples_card(),
            **extra_card,
        }
        if isinstance(generator, ShardedGenerator) and isinstance(card.get("distributed"), dict):
            card["distributed"] = {**card["distributed"], **generator.last_facts()}
        self._warn_if_near_timeout(generation_ms)
        run_specs = self.config.validators.specs()
        rows: list[Prediction] = []
        n = self.config.num_samples
        for position, (sample, gen) in enumerate(zip(asked, generations, strict=True)):
            rows.append(
                self._prediction(
                    sample, gen, position // n, step=step, epoch=epoch, trigger=trigger,
                    params=params, described=described, checkpoint=checkpoint,
                    run_specs=run_specs, score=score_prediction, validate=run_validators,
                    sample_number=position % n,
                )
            )
        sample_means = self._add_sample_metrics(rows, run_specs) if n > 1 else {}
        failed = sum(1 for r in rows if r.error)
        point = EvalPoint(
            run_id=self.run.id, step=step, epoch=epoch, trigger=trigger,
            sample_count=len(rows), failed_count=failed, generation_ms=generation_ms, card=card,
            writer=self.writer,
        )
        self.sink.submit(point, rows)
        if failed:
            log.error(
                "predwatch: %d of %d prompts failed to generate at step %s (first error: %s); "
                "their rows carry the error",
                failed, len(rows), step, next(r.error for r in rows if r.error),
            )
        validated = [r.validation_pass for r in rows if r.validation_pass is not None]
        summary = PointSummary(
            step=step, epoch=epoch, trigger=trigger.value, sample_count=len(rows),
            failed_count=failed, generation_ms=generation_ms,
            exact_match=_mean([r.exact_match for r in rows]),
            char_error_rate=_mean([r.char_error_rate for r in rows]),
            validation_pass_rate=(sum(validated) / len(validated)) if validated else None,
            sample_metrics=sample_means,
            predictions=rows,
        )
        if self.summaries:
            # Only the latest point keeps its rows: over a long run, the summaries of every
            # point holding every answer were memory that grew with each point.
            self.summaries[-1].predictions = []
        self.summaries.append(summary)
        if step > 0 and sum(s.step > 0 for s in self.summaries) == 1:  # first measurement
            from predwatch.recording.estimate import warn_if_over_budget

            warn_if_over_budget(
                self.config, point, [r.completion_tokens for r in rows],
                training_args=self.run.config.get("training_args"),
            )
        return summary

    def _expanded(self) -> list[Sample]:
        """What the generator answers: each prompt once, or ``num_samples`` times in a row
        (prompt-major), each copy with its own seed (``sample_seed``)."""
        n = self.config.num_samples
        if n == 1:
            return self.samples
        from predwatch.generation.base import sample_seed

        seed = self.config.seed
        return [s.model_copy(update={"seed": sample_seed(seed, s.prompt_id, k)})
                for s in self.samples for k in range(n)]

    def _samples_card(self) -> dict[str, Any]:
        """The card's note of how several answers per prompt were drawn (none for one)."""
        n = self.config.num_samples
        if n == 1:
            return {}
        return {"num_samples": n, "answer_count": n * len(self.samples),
                "sample_seeds": "per answer: sha256('SEED:PROMPT_ID:SAMPLE_NUMBER'), first 63 "
                                "bits (predwatch.generation.base.sample_seed)"}

    def _add_sample_metrics(
        self, rows: list[Prediction], run_specs: list[dict[str, Any]]
    ) -> dict[str, float]:
        """Write each prompt's pass@k and disagreement into its answers' ``metrics``; return
        their means over prompts (= the point's stored means: every prompt has n rows)."""
        from predwatch.scoring.samples import prompt_metrics

        n = self.config.num_samples
        totals: dict[str, list[float]] = {}
        for index, sample in enumerate(self.samples):
            group = rows[index * n:(index + 1) * n]
            checked = bool(run_specs or sample.validators)
            values = prompt_metrics(group, [checked] * len(group))
            for name, value in values.items():
                if value is None:
                    continue
                totals.setdefault(name, []).append(value)
                for row in group:
                    row.metrics[name] = value
        return {name: sum(v) / len(v) for name, v in totals.items()}

    def _warn_if_near_timeout(self, generation_ms: float) -> None:
        """Warn once when a point takes over half the process group's collective timeout: a
        longer one (more prompts, longer answers, a slower rank) ends the job in a timeout."""
        if self._timeout_warned or not self._ranks.distributed:
            return
        timeout = process_group_timeout_s()
        if timeout is None or generation_ms / 1000.0 <= timeout / 2:
            return
        self._timeout_warned = True
        log.warning(
            "predwatch: this evaluation point took %.0fs to generate, over half the process "
            "group's timeout (%.0fs); a longer point fails the job with a collective timeout. "
            "Lower sample_count/max_new_tokens or raise the timeout (init_process_group("
            "timeout=...), TrainingArguments(ddp_timeout=...), InitProcessGroupKwargs)",
            generation_ms / 1000.0, timeout,
        )

    def _prediction(
        self,
        sample: Sample,
        gen: Generation,
        index: int,
        *,
        step: int,
        epoch: float | None,
        trigger: Trigger,
        params: dict[str, Any],
        described: dict[str, Any],
        checkpoint: str | None,
        run_specs: list[dict[str, Any]],
        score: Any,
        validate: Any,
        sample_number: int = 0,
    ) -> Prediction:
        scores: dict[str, float | None] = {}
        outcome = None
        if gen.error is None:
            scores = dict(score(gen.text, sample.ground_truth, self.config.metrics))
            specs = run_specs + list(sample.validators)
            if specs:
                outcome = validate(
                    gen.text, specs,
                    finish_reason=gen.finish_reason, completion_tokens=gen.completion_tokens,
                    ground_truth=sample.ground_truth,
                )
        core = {name: scores.pop(name, None) for name in CORE_METRICS}
        return Prediction(
            run_id=self.run.id, step=step, epoch=epoch, trigger=trigger, sample_index=index,
            sample_number=sample_number, prompt_id=sample.prompt_id,
            source_index=sample.source_index,
            sample_source=sample.sample_source, sample_source_id=sample.sample_source_id,
            set_id=sample.set_id, set_version=sample.set_version, item_id=sample.item_id,
            prompt=sample.prompt, messages=sample.messages, ground_truth=sample.ground_truth,
            prediction=gen.text,
            exact_match=core["exact_match"],
            char_error_rate=core["char_error_rate"],
            length_ratio=core["length_ratio"],
            word_overlap=core["word_overlap"],
            metrics=scores,
            validation_pass=outcome.validation_pass if outcome else None,
            validation_kind=outcome.validation_kind if outcome else None,
            validation_errors=list(outcome.validation_errors) if outcome else [],
            validation_results=list(outcome.results) if outcome else [],
            generation_params=params,
            prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
            total_tokens=gen.total_tokens, latency_ms=gen.latency_ms,
            max_new_tokens=params.get("max_new_tokens"), do_sample=params.get("do_sample"),
            finish_reason=gen.finish_reason, checkpoint=checkpoint,
            model_revision=described.get("model_revision"),
            chat_template_hash=described.get("chat_template_hash"),
            precision=described.get("precision"),
            library_versions=dict(described.get("library_versions") or {}),
            error=gen.error,
        )


def _safe_describe(generator: Generator) -> dict[str, Any]:
    try:
        return dict(generator.describe())
    except Exception as exc:  # a card is nice to have; never lose the answers over it
        log.warning("predwatch: could not describe the generator: %s", exc)
        return {}


def _static_card() -> dict[str, Any]:
    """Facts that do not change during a run (computed once at start)."""
    from predwatch.repro.card import static_facts

    return static_facts()
