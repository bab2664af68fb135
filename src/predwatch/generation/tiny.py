"""A tiny causal language model and tokenizer built locally in seconds (nothing is downloaded).

Used by the tests, ``predwatch demo`` and the benchmarks. The tokenizer is a byte-level BPE trained
with the ``tokenizers`` library, so any text round-trips; the model is a randomly initialised
``LlamaForCausalLM``, deterministic for a seed. Needs the ``hf`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from predwatch.errors import MissingDependency

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# Zephyr-like: each turn is "<|role|>\n content </s>\n"; the generation prompt opens the assistant
# turn. The template starts with BOS itself, so rendered chats are tokenized without special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Enough text for BPE merges over JSON punctuation, letters, digits and chat markers.
DEFAULT_CORPUS: tuple[str, ...] = (
    '{"name": "Ada Lovelace", "born": 1815, "tags": ["math", "poetry"], "alive": false}',
    '{"id": 42, "price": 19.99, "in_stock": true, "sku": "AB-1234", "notes": null}',
    '[{"x": 0, "y": -1}, {"x": 2.5, "y": 3e8}] {"a": {"b": {"c": [1, 2, 3]}}}',
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
    "Question: what is 12 + 30? Answer: 42. Question: what is 7 * 6? Answer: 42.",
    "Extract the fields as JSON. Name: Grace Hopper; Year: 1906; City: New York.",
    "Translate to French: good morning -> bonjour; thank you -> merci; cat -> chat.",
    "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\nHi.</s>",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ "
    "_-+=*/\\|<>()[]{}:;,.?!'\"`~@#$%^&",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
)


def _require_hf() -> None:
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency(exc.name or "transformers", "hf") from None


def build_tokenizer(
    corpus: Iterable[str] | None = None, *, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with a chat template.

    Args:
        corpus: Training text; defaults to a small built-in corpus (JSON, prose, digits, chat).
        vocab_size: Target vocabulary size, including the 256 byte symbols and 3 special tokens.

    Returns:
        A fast tokenizer with ``<pad>``, ``<s>`` (bos) and ``</s>`` (eos), which prepends ``<s>``
        to plain text like Llama tokenizers do, and has ``chat_template`` set.
    """
    _require_hf()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text round-trips
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus if corpus is not None else DEFAULT_CORPUS), trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    seed: int = 0,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    intermediate_size: int | None = None,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised ``LlamaForCausalLM`` sized for tests, and its tokenizer.

    The weights depend only on ``seed`` and the sizes; torch's global RNG is left as it was. The
    model is in training mode, as a ``Trainer`` would hand it over.

    Args:
        seed: Seed of the weight initialisation.
        tokenizer: The tokenizer to size the vocabulary for; ``build_tokenizer()`` when None.
        hidden_size: Width of the model (a multiple of ``num_heads``).
        num_layers: Number of decoder layers.
        num_heads: Attention heads per layer.
        max_positions: ``max_position_embeddings`` of the config.
        intermediate_size: Width of the MLPs; Llama's ~8/3 of ``hidden_size`` when None.

    Returns:
        ``(model, tokenizer)``.
    """
    _require_hf()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or (hidden_size * 8 // 3 + 7) // 8 * 8,  # Llama's ~8/3
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    # fork_rng: seeding must not change the RNG stream of whoever builds the model (a test run).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.train()
    return model, tok
