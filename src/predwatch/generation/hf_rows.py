"""Per-row seeded sampling for ``HFGenerator`` (``num_samples`` > 1): each answer its own seed.

``model.generate`` samples every row of a batch from one random stream, so an answer depends on
which other prompts shared its batch and in what order: one row could not be regenerated alone.
Here each row draws from its own generator, seeded with the row's ``Sample.seed``:

- the sampling settings (temperature, top-k, top-p, min-p, typical, epsilon, eta, top-h) are
  taken out of the ``GenerationConfig`` handed to ``generate`` (so transformers appends none of
  its warpers) and applied, in transformers' order, inside one logits processor, ``RowSampler``;
- that processor then draws each row's next token by inverse transform sampling with a uniform
  from the row's own CPU ``torch.Generator`` (the same stream on CPU and GPU) and leaves only that
  token finite, so transformers' own ``multinomial`` can pick nothing else.

Row ``i``'s ``t``-th token uses the ``t``-th uniform of its own stream whatever the batch holds;
only floating-point noise of batched kernels (as under greedy decoding) can still differ.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

# The settings transformers turns into sampling warpers, and the value that turns each off.
_NEUTRAL: dict[str, Any] = {
    "temperature": 1.0, "top_h": None, "top_k": 0, "top_p": 1.0, "min_p": None,
    "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
}


def _warpers(config: GenerationConfig, device: torch.device) -> list[LogitsProcessor]:
    """The warpers transformers would append for ``config`` (its order; one token kept)."""
    out: list[LogitsProcessor] = []
    c = config
    if c.temperature is not None and c.temperature != 1.0:
        out.append(TemperatureLogitsWarper(c.temperature))
    if getattr(c, "top_h", None) is not None:
        out.append(TopHLogitsWarper(top_h=c.top_h))
    if c.top_k is not None and c.top_k != 0:
        out.append(TopKLogitsWarper(top_k=c.top_k))
    if c.top_p is not None and c.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=c.top_p))
    if c.min_p is not None:
        out.append(MinPLogitsWarper(min_p=c.min_p))
    if c.typical_p is not None and c.typical_p < 1.0:
        out.append(TypicalLogitsWarper(mass=c.typical_p))
    if c.epsilon_cutoff is not None and 0.0 < c.epsilon_cutoff < 1.0:
        out.append(EpsilonLogitsWarper(epsilon=c.epsilon_cutoff))
    if c.eta_cutoff is not None and 0.0 < c.eta_cutoff < 1.0:
        out.append(EtaLogitsWarper(epsilon=c.eta_cutoff, device=str(device)))
    return out


class RowSampler(LogitsProcessor):
    """Applies the sampling warpers, then draws each row's token from the row's own seed."""

    def __init__(self, warpers: Sequence[LogitsProcessor], seeds: Sequence[int]) -> None:
        self._warpers = list(warpers)
        self._streams = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self._streams):
            raise RuntimeError(f"{scores.shape[0]} rows to sample but {len(self._streams)} seeds")
        for warper in self._warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.double(), dim=-1)
        cumulative = probs.cumsum(dim=-1)
        # u in (0, 1], scaled by the row's total: the first token whose cumulative share
        # reaches it. A token of probability 0 is never chosen (u > 0; equal cumulative shares).
        uniforms = torch.cat([1.0 - torch.rand(1, generator=g, dtype=torch.float64)
                              for g in self._streams]).to(probs.device)
        target = (uniforms * cumulative[:, -1]).unsqueeze(-1)
        chosen = torch.searchsorted(cumulative, target).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen, 0.0)
        return out  # type: ignore[return-value]


def row_seeded(
    config: GenerationConfig, seeds: Sequence[int], device: torch.device
) -> tuple[GenerationConfig, dict[str, Any]]:
    """``config`` without its sampling warpers, and the ``generate`` keyword arguments that
    sample each row from its own seed instead (``logits_processor``)."""
    plain = copy.deepcopy(config)
    warpers = _warpers(config, device)
    plain.update(**{k: v for k, v in _NEUTRAL.items() if hasattr(plain, k)})
    return plain, {"logits_processor": LogitsProcessorList([RowSampler(warpers, seeds)])}
