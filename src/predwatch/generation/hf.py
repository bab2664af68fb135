"""``HFGenerator``: batched generation with a transformers causal LM, safe to call mid-training.

The model is the one being trained, so everything generation changes is put back afterwards:
train/eval mode per module, activation-checkpointing flags, ``config.use_cache``, torch's RNG
(sampling is seeded inside a fork of it) and the trainer's tokenizer (never touched: batching uses
a left-padded copy). Prompts are sorted by length into a fixed batch plan; a failing batch is
retried in halves down to single samples, and a sample that still fails gets an error row.

Greedy decoding (the default) runs predwatch's own loop (``generation/decode.py``): the prompts
of the plan stream through ``batch_size`` slots, a finished answer leaves the batch and its KV
cache at once and waiting prompts take the freed slots, so a round is not held up by each
batch's longest answer. Its answers are ``generate``'s token for token. Sampling, beams,
``repetition_penalty`` and any other logits processor a model's generation config turns on go to
``model.generate`` per planned batch; ``describe()["decoding"]`` says which ran last.

A sharded model (``params["synced_gpus"]``, set by ``ShardedGenerator``) takes the synced path of
``hf_synced``: ``model.generate(synced_gpus=True)``, never split (see there).
"""

from __future__ import annotations

import copy
import gc
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from transformers import GenerationConfig

from predwatch.errors import ConfigError
from predwatch.generation.base import (
    default_batch_size,
    error_generation,
    find_stop,
    plan_batches,
    resolve_params,
    sample_seed,
)
from predwatch.generation.decode import DecodeSettings, GreedyDecoder, unsupported_reason
from predwatch.generation.hf_rows import row_seeded
from predwatch.generation.hf_support import (
    adapter_info,
    inference_state,
    input_device,
    library_versions,
    parameter_dtype,
    resolve_precision,
    seeded,
    sha256,
    tokenizer_hash,
    unwrap_model,
)
from predwatch.generation.hf_synced import is_synced, run_synced, stand_in
from predwatch.records import FinishReason, Generation, Sample

__all__ = ["HFGenerator", "tokenizer_hash", "unwrap_model"]

logger = logging.getLogger(__name__)

Seed = int | list[int]  # one seed for a batch, or one per row (several answers per prompt)

LOOP = "predwatch greedy loop (finished rows leave the batch, waiting prompts refill it)"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What transformers itself treats as "unset" for sampling-only flags; used under greedy decoding
# so a model's own sampling defaults (e.g. temperature 0.6) do not trigger "flag ignored" warnings.
_NEUTRAL_SAMPLING = GenerationConfig._get_default_generation_params()


class HFGenerator:
    """Answers samples with a transformers causal LM (plain or PEFT-wrapped).

    Each answer records ``prompt_tokens`` (the prompt without padding), ``completion_tokens`` (new
    tokens up to and including EOS, or up to the token completing a stop string; never padding),
    ``finish_reason`` and ``latency_ms``: a batch is one computation, so its wall time is shared
    out by each sample's share of the tokens processed (prompt + completion), and the latencies
    of a batch add up to its wall time. A failed sample's latency is its last attempt's.

    Args:
        model: The model being trained (``PreTrainedModel``, ``PeftModel``, ...).
        tokenizer: The trainer's tokenizer. It is copied once here and never modified; later
            changes to it (a new chat template, added tokens) need a new ``HFGenerator``.
        precision: Autocast precision, as in training: ``"bf16"``, ``"fp16"``, ``"fp32"`` (no
            autocast), or None to pick from the parameters: bf16 or fp16 when any floating-point
            parameter has that dtype (a bf16 LoRA/QLoRA model), else fp32.
    """

    def __init__(self, model: Any, tokenizer: Any, *, precision: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._tok = copy.deepcopy(tokenizer)
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            if self._tok.eos_token is None:
                raise ConfigError("the tokenizer has neither a pad nor an eos token; set pad_token")
            self._tok.pad_token = self._tok.eos_token
        self._pad_id: int = self._tok.pad_token_id
        self.precision = resolve_precision(precision, model)
        base = unwrap_model(model)
        gen_eos = getattr(getattr(base, "generation_config", None), "eos_token_id", None)
        eos = {self._tok.eos_token_id} | set(
            [gen_eos] if isinstance(gen_eos, int) else gen_eos or []
        )
        self._eos_ids = {e for e in eos if e is not None}
        text_config = base.config.get_text_config()
        self._max_positions: int | None = getattr(
            text_config, "max_position_embeddings", None
        ) or getattr(text_config, "n_positions", None)
        self.decoding: str | None = None  # how the last generate() call decoded (for the card)

    # --- public API -----------------------------------------------------------------------

    def batch_size(self, params: Mapping[str, Any]) -> int:
        """``params``' batch size, or what an unset one means where the model's inputs live."""
        size = params.get("batch_size")
        return int(size) if size else default_batch_size(input_device(self.model).type)

    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        """Answer every sample; one ``Generation`` per sample, in the order given.

        Raises:
            ConfigError: ``params`` cannot make a valid ``GenerationConfig``.
        """
        p = resolve_params(params)
        p["batch_size"] = self.batch_size(p)
        config = self._generation_config(p)
        results: list[Generation | None] = [None] * len(samples)
        encoded: dict[int, list[int]] = {}
        synced = is_synced(p)  # a sharded model: see generation/hf_synced.py
        for i, sample in enumerate(samples):
            try:
                encoded[i] = self._encode(sample)
            except Exception as exc:  # noqa: BLE001 - a broken template/message: its row says why
                results[i] = error_generation(exc)
                if synced:
                    encoded[i] = stand_in(self)
                continue
            problem = self._check_fits(encoded[i], p["max_new_tokens"])
            if problem is not None:
                results[i] = error_generation(
                    ValueError(problem), prompt_tokens=len(encoded.pop(i))
                )
                if synced:
                    encoded[i] = stand_in(self)
        indices = list(encoded)
        plan = plan_batches(
            [len(encoded[i]) for i in indices],
            max_new_tokens=p["max_new_tokens"],
            batch_size=p["batch_size"],
            max_batch_tokens=p["max_batch_tokens"],
            num_beams=p["num_beams"],
        )
        # A sharded model needs every rank in every forward: its batches all go through
        # generate(synced_gpus=True), never predwatch's early-exit loop.
        reason = "synced forwards of a sharded model" if synced else unsupported_reason(
            self.model, config)
        self.decoding = (
            LOOP if reason is None else f"transformers generate per planned batch ({reason})"
        )
        with inference_state(self.model):
            if reason is None:  # one stream in plan order; the loop refills freed slots
                ids = [indices[j] for batch in plan for j in batch]
                rows = self._run_logged([encoded[i] for i in ids], config, p, p["seed"])
                for i, row in zip(ids, rows, strict=True):
                    results[i] = row
                plan = []
            per_row = p["do_sample"] and any(samples[i].seed is not None for i in indices)
            for number, batch in enumerate(plan):
                ids = [indices[j] for j in batch]
                # per batch: a retried batch does not shift the others; with several answers
                # per prompt, per row (``Sample.seed``): an answer does not depend on its batch
                seed: int | list[int] = (
                    [_row_seed(samples[i], p) for i in ids] if per_row else p["seed"] + number)
                if synced:  # always model.generate(synced_gpus=True), never split
                    rows = run_synced(self, [encoded[i] for i in ids], config, p, seed)
                else:
                    rows = self._run_logged([encoded[i] for i in ids], config, p, seed)
                for i, row in zip(ids, rows, strict=True):
                    if results[i] is None:  # (a stand-in's answer is discarded)
                        results[i] = row
        assert None not in results  # the plan holds every encoded sample exactly once
        return [r for r in results if r is not None]

    def describe(self) -> dict[str, Any]:
        """Reproducibility facts about the model, precision, tokenizer and libraries."""
        base = unwrap_model(self.model)
        template = getattr(self.tokenizer, "chat_template", None)
        facts: dict[str, Any] = {
            "model_name": getattr(base.config, "_name_or_path", None) or None,
            "model_revision": getattr(base.config, "_commit_hash", None),
            "model_class": type(base).__name__,
            "wrapper_class": type(self.model).__name__ if base is not self.model else None,
            "dtype": parameter_dtype(self.model),
            "precision": self.precision,
            "device": str(input_device(self.model)),
            "padding_side": self._tok.padding_side,
            "pad_token": self._tok.pad_token,
            "pad_token_from_eos": self.tokenizer.pad_token is None,
            "tokenizer_class": type(self.tokenizer).__name__,
            "tokenizer_hash": tokenizer_hash(self.tokenizer),
            "chat_template_hash": sha256(template) if isinstance(template, str) else None,
            "library_versions": library_versions(),
            "decoding": self.decoding,
        }
        facts.update(adapter_info(self.model))
        return facts

    # --- steps ------------------------------------------------------------------------------

    def _encode(self, sample: Sample) -> list[int]:
        if sample.messages is not None and getattr(self._tok, "chat_template", None):
            # tools and template kwargs exactly as TRL's SFTTrainer renders them in training.
            text = self._tok.apply_chat_template(
                sample.messages, tokenize=False, add_generation_prompt=True,
                tools=sample.tools, **(sample.chat_template_kwargs or {}),
            )
            # A template writes its own special tokens (BOS); adding them again would double them.
            return list(self._tok(text, add_special_tokens=False)["input_ids"])
        if sample.messages is not None:
            lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in sample.messages]
            text = "\n".join([*lines, "assistant:"])
        else:
            text = sample.prompt
        return list(self._tok(text)["input_ids"])

    def _check_fits(self, ids: list[int], max_new_tokens: int) -> str | None:
        # Caught here rather than by the model: out-of-range positions or token ids are an
        # IndexError on CPU but a device-side assert on CUDA, which breaks the whole training run.
        if not ids:
            return "the prompt is empty after tokenization"
        rows = getattr(self.model.get_input_embeddings(), "num_embeddings", None)
        if rows is not None and max(ids) >= rows:
            return f"token id {max(ids)} is outside the model's {rows} embeddings (resize them)"
        needed = len(ids) + max_new_tokens - 1  # the last new token is never fed back
        if self._max_positions is not None and needed > self._max_positions:
            return (
                f"the prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it needs "
                f"{needed} positions, more than the model's {self._max_positions}"
            )
        return None

    def _generation_config(self, p: Mapping[str, Any]) -> GenerationConfig:
        config: GenerationConfig = copy.deepcopy(unwrap_model(self.model).generation_config)
        overrides: dict[str, Any] = {
            "max_new_tokens": p["max_new_tokens"],
            "min_new_tokens": p["min_new_tokens"],
            "max_length": None,  # max_new_tokens governs; a stale max_length would only warn
            "do_sample": p["do_sample"],
            "num_beams": p["num_beams"],
            "repetition_penalty": p["repetition_penalty"],
            "stop_strings": p["stop_strings"] or None,
            "use_cache": True,
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids),
        }
        if p["do_sample"]:
            # top_k None means no top-k filter; transformers reads 0 as that (None would be 50).
            overrides.update(temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"] or 0)
        else:
            overrides.update({k: _NEUTRAL_SAMPLING[k] for k in ("temperature", "top_p", "top_k")})
        try:
            config.update(**overrides)  # validates: a bad value raises ValueError
        except ValueError as exc:
            raise ConfigError(f"invalid generation parameters: {exc}") from None
        return config

    def _run_logged(
        self, rows: list[list[int]], config: GenerationConfig, p: Mapping[str, Any], seed: Seed
    ) -> list[Generation]:
        failures: list[str] = []
        out = self._run(rows, config, p, seed, failures)
        if failures:  # once per planned batch, however many retries it took
            lost = sum(g.error is not None for g in out)
            logger.log(
                logging.ERROR if lost else logging.WARNING,
                "predwatch: a batch of %d prompts failed %d time(s); retried in halves: "
                "%d answered, %d recorded as error rows. First failure:\n%s",
                len(rows), len(failures), len(rows) - lost, lost, failures[0],
            )  # fmt: skip
        return out

    def _run(
        self,
        rows: list[list[int]],
        config: GenerationConfig,
        p: Mapping[str, Any],
        seed: Seed,
        failures: list[str],
    ) -> list[Generation]:
        """Generate ``rows``; on failure retry each half, down to single samples."""
        start = time.perf_counter()
        try:
            return self._generate_batch(rows, config, p, seed)
        except Exception as exc:  # noqa: BLE001 - every failure is retried smaller, then recorded
            error = f"{type(exc).__name__}: {exc}"
            oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)
            failures.append(error if failures else traceback.format_exc())
        # Only now, outside the except block, is the traceback released, and with it the
        # tensors its frames hold: memory can be given back before the retry.
        elapsed_ms = (time.perf_counter() - start) * 1000
        if oom:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if len(rows) == 1:
            return [error_generation(error, prompt_tokens=len(rows[0]), latency_ms=elapsed_ms)]
        half = len(rows) // 2
        first, second = (seed[:half], seed[half:]) if isinstance(seed, list) else (seed, seed)
        return self._run(rows[:half], config, p, first, failures) + self._run(
            rows[half:], config, p, second, failures
        )

    def _generate_batch(
        self, rows: list[list[int]], config: GenerationConfig, p: Mapping[str, Any], seed: Seed
    ) -> list[Generation]:
        start = time.perf_counter()
        device = input_device(self.model)
        with self._autocast(device):
            if self.decoding == LOOP:
                new_tokens = self._loop(rows, p, device)
            else:
                new_tokens = self._generate_tokens(rows, config, p, seed, device)
        finished = [self._finish(ids, p) for ids in new_tokens]
        elapsed_ms = (time.perf_counter() - start) * 1000
        work = [len(r) + n for r, (_, n, _) in zip(rows, finished, strict=True)]
        return [
            Generation(
                text=text,
                prompt_tokens=len(r),
                completion_tokens=n,
                latency_ms=elapsed_ms * w / sum(work),
                finish_reason=reason,
            )
            for r, (text, n, reason), w in zip(rows, finished, work, strict=True)
        ]

    def _generate_tokens(
        self,
        rows: list[list[int]],
        config: GenerationConfig,
        p: Mapping[str, Any],
        seed: Seed,
        device: torch.device,
    ) -> list[list[int]]:
        """New tokens of each row by ``model.generate`` (padded to the batch's longest)."""
        batch = self._tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        input_ids = batch["input_ids"].to(device)
        extra: dict[str, Any] = {"tokenizer": self._tok} if p["stop_strings"] else {}
        if isinstance(seed, list):  # one seed per row (hf_rows.py)
            config, sampling = row_seeded(config, seed, device)
            extra.update(sampling)
            seed = 0  # transformers' own draw is left with one possible token per row
        with seeded(seed, device) if p["do_sample"] else nullcontext():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
                **extra,
            )
        return list(output[:, input_ids.shape[1] :].tolist())  # .tolist() waits for the device

    def _loop(
        self, rows: list[list[int]], p: Mapping[str, Any], device: torch.device
    ) -> list[list[int]]:
        """New tokens of each row by predwatch's greedy loop (no padding after an answer)."""
        stops = p["stop_strings"]
        settings = DecodeSettings(
            # With a token budget, as in plan_batches, the budget alone bounds the rows.
            slots=p["batch_size"] if p["max_batch_tokens"] is None else len(rows),
            max_batch_tokens=p["max_batch_tokens"],
            max_new_tokens=p["max_new_tokens"],
            min_new_tokens=p["min_new_tokens"] or 0,
            eos_ids=frozenset(self._eos_ids),
            pad_id=self._pad_id,
            stopped=(lambda ids: find_stop(self._decode(ids), stops) is not None) if stops
            else None,
        )  # fmt: skip
        return GreedyDecoder(self.model, device, settings).run(rows)

    def _finish(self, ids: list[int], p: Mapping[str, Any]) -> tuple[str, int, FinishReason]:
        """Text, completion tokens and finish reason of one row of new tokens."""
        stops = p["stop_strings"]
        eos_at = next((i for i, t in enumerate(ids) if t in self._eos_ids), None)
        end = eos_at + 1 if eos_at is not None else len(ids)
        if eos_at is None and stops:  # rows stopped by a stop string are padded to the batch end
            while end > 0 and ids[end - 1] == self._pad_id:
                end -= 1
        text = self._decode(ids[:end])
        cut = find_stop(text, stops)
        if cut is not None:
            return text[:cut], self._tokens_to_stop(ids[:end], stops), FinishReason.STOP
        if eos_at is not None:
            return text, end, FinishReason.EOS
        if end >= p["max_new_tokens"] or not stops:
            return text, end, FinishReason.LENGTH
        # Stopped early by transformers' stop-string check, though the decoded text (special
        # tokens skipped) no longer shows the string.
        return text, end, FinishReason.STOP

    def _tokens_to_stop(self, ids: list[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if find_stop(self._decode(ids[:mid]), stops) is not None:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def _autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _row_seed(sample: Sample, p: Mapping[str, Any]) -> int:
    """A row's own sampling seed: its ``Sample.seed``, else that of a first answer."""
    return sample.seed if sample.seed is not None else sample_seed(p["seed"], sample.prompt_id, 0)
