"""Torch-side helpers of ``HFGenerator``: the model's state around generation, seeded sampling,
and the facts ``describe()`` reports. Imported only by ``generation/hf.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import torch

from predwatch.errors import ConfigError
from predwatch.records import canonical_json

PRECISIONS = {
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "no": "fp32",
}  # fmt: skip


# --- model state --------------------------------------------------------------------------


@contextmanager
def inference_state(model: Any) -> Iterator[None]:
    """Eval mode, no grad, no activation checkpointing, KV cache on; all restored exactly after.

    Checkpointing is switched off through the per-module flags rather than
    ``gradient_checkpointing_disable()/enable()``: re-enabling through the API would drop the
    trainer's checkpoint kwargs, ``every_n_layers`` and offload settings and PEFT's input-grad
    hooks. ``no_grad`` rather than ``inference_mode``: buffers a model creates lazily during
    generation (e.g. dynamic RoPE) would become inference tensors and break the next backward.
    """
    modes = [(m, m.training) for m in model.modules()]
    checkpointed = [
        m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True
    ]
    config = unwrap_model(model).config
    use_cache = getattr(config, "use_cache", None)
    try:
        for m in checkpointed:
            m.gradient_checkpointing = False
        if use_cache is not None:
            config.use_cache = True
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for m in checkpointed:
            m.gradient_checkpointing = True
        if use_cache is not None:
            config.use_cache = use_cache


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed sampling inside a fork of torch's RNG, so training's random stream is unchanged."""
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


# --- facts ----------------------------------------------------------------------------------


def unwrap_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper or a ``torch.compile`` module."""
    model = getattr(model, "_orig_mod", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (vocab, merges, special and added tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return sha256(backend.to_str())
    return sha256(canonical_json(sorted(tokenizer.get_vocab().items())))


def resolve_precision(precision: str | None, model: Any) -> str:
    if precision is None:
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        return "bf16" if torch.bfloat16 in dtypes else "fp16" if torch.float16 in dtypes else "fp32"
    try:
        return PRECISIONS[precision.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown precision {precision!r}; use 'bf16', 'fp16', 'fp32' or None (auto)"
        ) from None


def parameter_dtype(model: Any) -> str | None:
    """The floating-point dtype holding most parameter elements, e.g. ``"bfloat16"``.

    Counted by elements, not tensors: a bf16 model with fp32 LoRA adapters has more fp32
    tensors than bf16 ones, but its weights are bf16 (what a regeneration loads it in).
    """
    elements: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            # DeepSpeed ZeRO-3 leaves each rank a shard (numel() 0); ds_numel is the full size.
            elements[p.dtype] = elements.get(p.dtype, 0) + (getattr(p, "ds_numel", None)
                                                           or p.numel())
    if not elements:
        return None
    return str(max(elements, key=lambda d: elements[d])).removeprefix("torch.")


def input_device(model: Any) -> torch.device:
    embeddings = model.get_input_embeddings()
    if embeddings is not None:
        device: torch.device = embeddings.weight.device
    else:
        device = next(model.parameters()).device
    return device


def adapter_info(model: Any) -> dict[str, Any]:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or not configs:
        return {}
    active = getattr(model, "active_adapters", None)  # a property on PeftModel, a method on HF
    names = list(active() if callable(active) else active or [])
    name = names[0] if names else next(iter(configs))
    config = configs.get(name)
    peft_type = getattr(config, "peft_type", None)
    return {
        "adapter_name": name,
        "adapter_names": names,
        "adapter_type": getattr(peft_type, "value", peft_type),
        "adapter_rank": getattr(config, "r", None),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("torch", "transformers", "peft", "tokenizers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
