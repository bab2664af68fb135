"""A greedy decode loop of our own: finished rows leave the batch, waiting prompts take their place.

``model.generate`` runs a batch until its longest answer ends; answers that end at EOS early keep
being computed (as padding) until then. This loop calls the model's forward over a
``DynamicCache`` itself: a row that ends (EOS, ``max_new_tokens``, a stop string) is dropped from
the batch and from the cache at once, cache columns that only padding still uses are cut off,
and when an eighth of the slots (at least one) are free the next prompts (in the caller's order)
are prefilled together and merged in, left-padded to the cache's length. The cache lives in
buffers kept from step to step (``_SlabLayer``), so none of this copies the whole cache; with
sdpa attention a decode step gets its mask prebuilt (the tensor transformers would build for it
from the padding mask). Greedy answers are those of ``generate``:
left padding is masked, position ids count only real tokens (as ``generate`` computes them),
``min_new_tokens`` masks the EOS ids as transformers' processor does, and the next token is the
argmax of the last position's fp32 logits.

Only what it does exactly is done here: greedy search, one beam, no repetition penalty and no
other logits processor, on models whose cache is made of plain (full-attention) dynamic layers.
``unsupported_reason`` says why anything else must go to ``generate``. Imported only by
``generation/hf.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

from predwatch.generation.hf_support import unwrap_model

# GenerationConfig fields that make ``generate`` add a logits processor or a different search,
# with the value that means "off". The loop runs only when every one is off.
_OFF: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "watermarking_config": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "speculation_type": None,
    "use_mtp": False,
    "token_healing": False,
    "remove_invalid_values": False,
    "num_return_sequences": 1,
    "prefill_chunk_size": None,
    "min_length": 0,
    "max_time": None,
    "renormalize_logits": False,
    "low_memory": None,
    "dola_layers": None,
}


def unsupported_reason(model: Any, config: GenerationConfig) -> str | None:
    """Why the loop cannot reproduce ``model.generate`` with ``config`` exactly, or None.

    Args:
        model: The model as given (a PEFT wrapper is looked into).
        config: The merged generation config ``generate`` would get.
    """
    for field, off in _OFF.items():
        value = getattr(config, field, off)
        if value not in (off, None) and not (off is None and value in ((), [], {})):
            return f"{field}={value!r}"
    if getattr(config, "cache_implementation", None) not in (None, "dynamic"):
        return f"cache_implementation={config.cache_implementation!r}"
    adapters = getattr(model, "peft_config", None)
    if isinstance(adapters, dict) and any(
        getattr(c, "is_prompt_learning", False) for c in adapters.values()
    ):
        return "a prompt-learning PEFT adapter (virtual tokens)"
    base = unwrap_model(model)
    text_config = base.config.get_text_config(decoder=True)
    if getattr(base.config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    if not _plain_cache(text_config):
        return "the model's cache has sliding-window or non-attention layers"
    return None


def _plain_cache(text_config: Any) -> bool:
    try:
        cache = DynamicCache(config=text_config)
    except Exception:  # noqa: BLE001 - a config the cache cannot read: leave it to generate
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass(frozen=True)
class DecodeSettings:
    """What the loop needs besides the model and the prompts.

    Attributes:
        slots: Rows decoded together at most (the batch size).
        max_batch_tokens: When set, rows x (cache length + max_new_tokens) stays within it
            (one row always runs).
        max_new_tokens: New tokens per answer at most.
        min_new_tokens: EOS ids are masked until an answer has this many tokens.
        eos_ids: Tokens that end an answer (kept as its last token).
        pad_id: The padding token of the left-padded prompts.
        stopped: Given an answer's tokens so far, whether a stop string ended it.
    """

    slots: int
    max_batch_tokens: int | None
    max_new_tokens: int
    min_new_tokens: int
    eos_ids: frozenset[int]
    pad_id: int
    stopped: Callable[[list[int]], bool] | None = None


# The next prompts are admitted when this share of the slots is free (at least one slot): the
# batch stays nearly full (fewer decode steps), and a prefill still takes a few prompts. Measured
# on the realistic bench (16 slots): 1/2 -> 1/4 -> 1/8 free cut the round by ~6% and ~3% more;
# admitting at every free slot gained nothing more.
_REFILL_FRACTION = 0.125

# Admitted prompts are prefilled in chunks of at most this many padded tokens (rows x the
# longest prompt of the chunk), then merged: one forward over 32 left-padded prompts of 4-200
# tokens took 2.6x as long on 2 CPU cores as the same prompts in chunks of about this size
# (0.745 s vs 0.295 s; chunks of 8-16 rows measured alike), and less padding is computed.
_PREFILL_TOKENS = 2048


class _SlabLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers reused from step to step.

    ``DynamicLayer`` appends each token with ``torch.cat``, copying the whole cache at every
    step. Here the buffers have spare rows and columns: the batch's rows are ``[:rows]``, its
    columns ``[start:end]``, and attention reads a view of that window (the same values, so
    the same results). A new token is written in place; a finished row is replaced by the
    batch's last row (one row copied, nothing reallocated); columns no row attends to any
    more are left behind by moving ``start``; merged prompts are written into the spare rows.
    The buffers are replaced (one copy of the window) only when a row or a column is missing.
    """

    def __init__(self, room: int, capacity: int) -> None:
        super().__init__()
        self.room, self.capacity = room, capacity  # spare columns; rows at first
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self.rows = self.start = self.end = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._buffers is None:
            self.load(key_states, value_states, self.capacity)
            return self._publish()
        new = key_states.shape[-2]
        if self.end + new > self._buffers[0].shape[-2]:  # out of columns: a new window
            self._regrow(self._buffers[0].shape[0], 0)
        keys, values = self._buffers
        keys[: self.rows, :, self.end : self.end + new] = key_states
        values[: self.rows, :, self.end : self.end + new] = value_states
        self.end += new
        return self._publish()

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's window of the keys and values."""
        assert self._buffers is not None, "an empty cache layer"
        keys, values = self._buffers
        return (keys[: self.rows, :, self.start : self.end],
                values[: self.rows, :, self.start : self.end])  # fmt: skip

    def load(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Hold ``keys`` and ``values`` (copied) in buffers of ``capacity`` rows and spare room."""
        b, h, length, _ = keys.shape
        shape = (max(capacity, b), h, length + self.room)
        self._buffers = (keys.new_empty(*shape, keys.shape[-1]),
                         values.new_empty(*shape, values.shape[-1]))  # fmt: skip
        self._buffers[0][:b, :, :length] = keys
        self._buffers[1][:b, :, :length] = values
        self.rows, self.start, self.end = b, 0, length
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._publish()

    def move_rows(self, moves: list[tuple[int, int]], rows: int) -> None:
        """Copy row ``src`` onto row ``dst`` for each ``(dst, src)``; keep the first ``rows``."""
        assert self._buffers is not None, "an empty cache layer"
        for buffer in self._buffers:
            for dst, src in moves:
                buffer[dst, :, self.start : self.end] = buffer[src, :, self.start : self.end]
        self.rows = rows
        self._publish()

    def drop_columns(self, lead: int) -> None:
        """Forget the first ``lead`` columns of the window."""
        self.start += lead
        self._publish()

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Add rows, right-aligned; the shorter side is left-padded with zeros (masked)."""
        assert self._buffers is not None, "an empty cache layer"
        added, fresh = keys.shape[0], keys.shape[-2]
        missing = fresh - (self.end - self.start)  # columns the window lacks on the left
        if self.rows + added > self._buffers[0].shape[0] or missing > self.start:
            self._regrow(max(capacity, self.rows + added), max(missing, 0))
        elif missing > 0:
            self.start -= missing
            for buffer in self._buffers:
                buffer[: self.rows, :, self.start : self.start + missing] = 0
        rows = slice(self.rows, self.rows + added)
        cut = self.end - fresh
        for buffer, new in zip(self._buffers, (keys, values), strict=True):
            buffer[rows, :, self.start : cut] = 0
            buffer[rows, :, cut : self.end] = new
        self.rows += added
        self._publish()

    def _regrow(self, capacity: int, left: int) -> None:
        """New buffers of ``capacity`` rows holding the window after ``left`` zero columns."""
        old_keys, old_values = self.views()
        padded = [_left_pad(t, t.shape[-2] + left) for t in (old_keys, old_values)]
        self.load(padded[0], padded[1], capacity)

    def _publish(self) -> tuple[torch.Tensor, torch.Tensor]:
        # What DynamicLayer's readers (get_seq_length, mask sizes) look at.
        self.keys, self.values = self.views()
        return self.keys, self.values


class _Batch:
    """The rows being decoded: their cache, attention mask, next positions and last tokens."""

    def __init__(self, rows: list[int], cache: DynamicCache, mask: torch.Tensor,
                 positions: torch.Tensor, last: torch.Tensor) -> None:  # fmt: skip
        self.rows, self.cache, self.mask, self.positions, self.last = (
            rows, cache, mask.to(torch.bool), positions, last
        )  # fmt: skip
        self.padded = not bool(self.mask.all())  # any masked column (one sync per change)

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` and cut the cache columns no kept row attends to.

        Each dropped row's place is taken by one of the last rows, so only those are copied;
        the rows' order changes (``rows`` says which prompt each row answers).
        """
        count = len(keep)
        kept = set(keep)
        holes = [k for k in range(count) if k not in kept]
        moves = list(zip(holes, [k for k in keep if k >= count], strict=True))
        order = list(range(count))
        for dst, src in moves:
            order[dst] = src
        index = torch.tensor(order, device=self.mask.device)
        self.rows = [self.rows[k] for k in order]
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.last = self.last[index]
        lead = int(self.mask.any(0).to(torch.int8).argmax())  # first column a row still uses
        self.mask = self.mask[:, lead:]
        self.padded = not bool(self.mask.all())
        for layer in _layers(self.cache):
            layer.move_rows(moves, count)
            layer.drop_columns(lead)

    def merge(self, other: _Batch, capacity: int) -> None:
        """Append ``other``'s rows, left-padding the shorter cache (padding is masked)."""
        length = max(self.length, other.length)
        self.rows = self.rows + other.rows
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.padded = self.padded or other.padded or other.length != self.length
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.append_rows(*theirs.views(), capacity)


def _prefill_chunks(rows: Sequence[list[int]]) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive rows whose left-padded prefill (rows x the longest)
    stays within ``_PREFILL_TOKENS`` (a longer prompt is a chunk of its own)."""
    chunks: list[tuple[int, int]] = []
    start, longest = 0, 0
    for k, row in enumerate(rows):
        width = max(longest, len(row))
        if k > start and width * (k - start + 1) > _PREFILL_TOKENS:
            chunks.append((start, k))
            start, width = k, len(row)
        longest = width
    chunks.append((start, len(rows)))
    return chunks


def _layers(cache: DynamicCache) -> list[_SlabLayer]:
    return cast(list[_SlabLayer], cache.layers)


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros before the sequence dimension (the last of a mask, the third of keys/values)."""
    dim = 1 if tensor.dim() == 2 else 2
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class GreedyDecoder:
    """Runs the loop for one model; see the module docstring.

    Args:
        model: A decoder-only causal LM (plain or PEFT-wrapped) in eval mode, under no_grad.
        device: Where its input embeddings live.
        settings: Slots, budget, lengths and the tokens that end an answer.
    """

    def __init__(self, model: Any, device: torch.device, settings: DecodeSettings) -> None:
        self.model = model
        self.device = device
        self.s = settings
        self._eos = torch.tensor(sorted(settings.eos_ids), device=device)
        base = unwrap_model(model)
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._config = base.config.get_text_config(decoder=True)
        # With sdpa, a decode step's mask is the padding mask as a (rows, 1, 1, length) bool
        # tensor, which is what transformers' create_causal_mask builds for one new token.
        self._sdpa = getattr(self._config, "_attn_implementation", None) == "sdpa"
        self._refill_at = max(1, int(settings.slots * _REFILL_FRACTION))

    def _capacity(self, rows: int) -> int:
        """Rows to allocate the cache for: all the slots, unless a token budget bounds them."""
        return rows if self.s.max_batch_tokens is not None else max(rows, self.s.slots)

    def run(self, prompts: Sequence[list[int]]) -> list[list[int]]:
        """New tokens of each prompt (up to and including its EOS), in the order given."""
        answers: list[list[int]] = [[] for _ in prompts]
        waiting = list(range(len(prompts)))[::-1]  # popped from the end: the caller's order
        batch: _Batch | None = None
        while waiting or batch is not None:
            active = 0 if batch is None else len(batch.rows)
            refill = batch is None or self.s.slots - active >= self._refill_at
            admitted = self._admit(prompts, waiting, batch) if refill else []
            if admitted:  # (with a token budget, none may fit until rows end)
                if batch is None:
                    batch = self._prefill([prompts[i] for i in admitted], admitted,
                                          self._capacity(len(admitted)), self.s.max_new_tokens)
                    fresh = batch
                else:
                    fresh = self._prefill([prompts[i] for i in admitted], admitted,
                                          len(admitted), 0)
                    batch.merge(fresh, self._capacity(active + len(admitted)))
                batch = self._settle(batch, fresh.last.tolist(), answers, offset=active)
                continue
            assert batch is not None
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
            # A decode step's causal mask is the padding mask: built here, not by the model.
            mask = batch.mask[:, None, None, :] if self._sdpa and batch.padded else batch.mask
            logits = self._forward(batch.last[:, None], mask, batch.positions[:, None],
                                   batch.cache)  # fmt: skip
            batch.positions = batch.positions + 1
            batch.last = self._choose(logits, [len(answers[r]) for r in batch.rows])
            batch = self._settle(batch, batch.last.tolist(), answers, offset=0)
        return answers

    # --- steps ---------------------------------------------------------------------------

    def _admit(self, prompts: Sequence[list[int]], waiting: list[int],
               batch: _Batch | None) -> list[int]:  # fmt: skip
        """Pop the next prompts that fit the free slots (and the token budget)."""
        active = 0 if batch is None else len(batch.rows)
        length = 0 if batch is None else batch.length
        admitted: list[int] = []
        longest = 0
        while waiting and active + len(admitted) < self.s.slots:
            candidate = waiting[-1]
            if self.s.max_batch_tokens is not None and (active or admitted):
                width = max(length, longest, len(prompts[candidate])) + self.s.max_new_tokens
                if (active + len(admitted) + 1) * width > self.s.max_batch_tokens:
                    break
            longest = max(longest, len(prompts[candidate]))
            admitted.append(waiting.pop())
        return admitted

    def _prefill(self, rows: list[list[int]], indices: list[int], capacity: int,
                 room: int) -> _Batch:  # fmt: skip
        """The admitted prompts prefilled in chunks of at most ``_PREFILL_TOKENS`` padded
        tokens (consecutive rows, so similar lengths when the caller sorted them), merged into
        one batch holding ``capacity`` rows with ``room`` spare columns. The chunk with the
        longest prompt goes first, so the others fit its cache's window without a regrow."""
        chunks = _prefill_chunks(rows)
        chunks.sort(key=lambda c: -max(len(r) for r in rows[c[0] : c[1]]))
        start, stop = chunks[0]
        batch = self._prefill_chunk(rows[start:stop], indices[start:stop], capacity, room)
        for start, stop in chunks[1:]:
            fresh = self._prefill_chunk(rows[start:stop], indices[start:stop], stop - start, 0)
            batch.merge(fresh, capacity)
        return batch

    def _prefill_chunk(self, rows: list[list[int]], indices: list[int], capacity: int,
                       room: int) -> _Batch:  # fmt: skip
        length = max(len(r) for r in rows)
        ids = torch.tensor([[self.s.pad_id] * (length - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate computes them
        cache = DynamicCache(config=self._config)
        # All plain DynamicLayers (unsupported_reason checked): the same, with room to grow.
        cache.layers = [_SlabLayer(room, capacity) for _ in cache.layers]
        logits = self._forward(ids, mask, positions, cache)
        last = self._choose(logits, [0] * len(rows))
        return _Batch(list(indices), cache, mask, positions[:, -1] + 1, last)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache) -> torch.Tensor:  # fmt: skip
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, **extra)  # fmt: skip
        # fp32 before choosing, as generate does (bf16/fp16 logits under autocast).
        logits: torch.Tensor = out.logits[:, -1, :].to(dtype=torch.float32)
        return logits

    def _choose(self, logits: torch.Tensor, generated: list[int]) -> torch.Tensor:
        if self.s.min_new_tokens > 0:
            early = torch.tensor([n < self.s.min_new_tokens for n in generated],
                                 device=logits.device)  # fmt: skip
            if bool(early.any()):
                blocked = torch.zeros_like(logits, dtype=torch.bool)
                blocked[:, self._eos] = True
                logits = logits.masked_fill(blocked & early[:, None], -float("inf"))
        return logits.argmax(dim=-1)

    def _settle(self, batch: _Batch, tokens: list[int], answers: list[list[int]],
                offset: int) -> _Batch | None:  # fmt: skip
        """Append each row's new token (rows from ``offset`` on); drop the rows that ended."""
        keep: list[int] = []
        for k, row in enumerate(batch.rows):
            if k < offset:
                keep.append(k)
                continue
            answer = answers[row]
            answer.append(tokens[k - offset])
            ended = (
                answer[-1] in self.s.eos_ids
                or len(answer) >= self.s.max_new_tokens
                or (self.s.stopped is not None and self.s.stopped(answer))
            )
            if not ended:
                keep.append(k)
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            batch.keep(keep)
        return batch
