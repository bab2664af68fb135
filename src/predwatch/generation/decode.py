"""A greedy decode loop of our own: finished rows leave the batch, waiting prompts take their place.

``model.generate`` runs a batch until its longest answer ends; answers that end at EOS early keep
being computed (as padding) until then. This loop calls the model's forward over a
``DynamicCache`` itself: a row that ends (EOS, ``max_new_tokens``, a stop string) is dropped from
the batch and from the cache at once, cache columns that only padding still uses are cut off,
and when half the slots are free the next prompts (in the caller's order) are prefilled together
and merged in, left-padded to the cache's length. Greedy answers are those of ``generate``:
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


class _RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers with room for the new tokens.

    ``DynamicLayer`` appends each token with ``torch.cat``, copying the whole cache at every
    step; here a token is written in place and attention reads a view of the filled part (the
    same values, so the same results).
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self.filled = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._buffers is None:
            return self.set(key_states, value_states)
        keys, values = self._buffers
        start, end = self.filled, self.filled + key_states.shape[-2]
        if end > keys.shape[-2]:  # out of room: move to bigger buffers
            old_keys, old_values = self.views()
            return self.set(torch.cat([old_keys, key_states], -2),
                            torch.cat([old_values, value_states], -2))  # fmt: skip
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        self.filled = end
        return self._publish()

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled part of the keys and values."""
        assert self._buffers is not None, "an empty cache layer"
        keys, values = self._buffers
        return keys[:, :, : self.filled], values[:, :, : self.filled]

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hold ``keys`` and ``values``, copied into new buffers with ``room`` to spare."""
        b, h, length, _ = keys.shape
        self._buffers = (
            keys.new_empty(b, h, length + self.room, keys.shape[-1]),
            values.new_empty(b, h, length + self.room, values.shape[-1]),
        )
        self._buffers[0][:, :, :length] = keys
        self._buffers[1][:, :, :length] = values
        self.filled = length
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        return self._publish()

    def _publish(self) -> tuple[torch.Tensor, torch.Tensor]:
        # What DynamicLayer's readers (get_seq_length, mask sizes) look at.
        self.keys, self.values = self.views()
        return self.keys, self.values


class _Batch:
    """The rows being decoded: their cache, attention mask, next positions and last tokens."""

    def __init__(self, rows: list[int], cache: DynamicCache, mask: torch.Tensor,
                 positions: torch.Tensor, last: torch.Tensor) -> None:  # fmt: skip
        self.rows, self.cache, self.mask, self.positions, self.last = (
            rows, cache, mask, positions, last
        )  # fmt: skip

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` and cut the cache columns no kept row attends to."""
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[k] for k in keep]
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        self.last = self.last[index]
        lead = int(self.mask.any(0).to(torch.int8).argmax())  # first column a row still uses
        self.mask = self.mask[:, lead:]
        for layer in _layers(self.cache):
            keys, values = layer.views()
            layer.set(keys[index, :, lead:], values[index, :, lead:])

    def merge(self, other: _Batch) -> None:
        """Append ``other``'s rows, left-padding the shorter cache (padding is masked)."""
        length = max(self.length, other.length)
        self.rows = self.rows + other.rows
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            (my_keys, my_values), (their_keys, their_values) = mine.views(), theirs.views()
            mine.set(
                torch.cat([_left_pad(my_keys, length), _left_pad(their_keys, length)]),
                torch.cat([_left_pad(my_values, length), _left_pad(their_values, length)]),
            )


def _layers(cache: DynamicCache) -> list[_RoomyLayer]:
    return cast(list[_RoomyLayer], cache.layers)


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

    def run(self, prompts: Sequence[list[int]]) -> list[list[int]]:
        """New tokens of each prompt (up to and including its EOS), in the order given."""
        answers: list[list[int]] = [[] for _ in prompts]
        waiting = list(range(len(prompts)))[::-1]  # popped from the end: the caller's order
        batch: _Batch | None = None
        while waiting or batch is not None:
            active = 0 if batch is None else len(batch.rows)
            admitted = (
                self._admit(prompts, waiting, batch) if active <= self.s.slots // 2 else []
            )
            if admitted:  # (with a token budget, none may fit until rows end)
                fresh = self._prefill([prompts[i] for i in admitted], admitted)
                if batch is None:
                    batch = fresh
                else:
                    batch.merge(fresh)
                batch = self._settle(batch, fresh.last.tolist(), answers, offset=active)
                continue
            assert batch is not None
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
            logits = self._forward(batch.last[:, None], batch.mask, batch.positions[:, None],
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

    def _prefill(self, rows: list[list[int]], indices: list[int]) -> _Batch:
        length = max(len(r) for r in rows)
        ids = torch.tensor([[self.s.pad_id] * (length - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate computes them
        cache = DynamicCache(config=self._config)
        # All plain DynamicLayers (unsupported_reason checked): the same, with room to grow.
        cache.layers = [_RoomyLayer(self.s.max_new_tokens) for _ in cache.layers]
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
