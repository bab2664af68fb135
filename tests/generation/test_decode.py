"""predwatch's greedy loop against ``model.generate``, token for token, on the real tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, GenerationConfig, MistralConfig, MistralForCausalLM

from predwatch.generation import HFGenerator
from predwatch.generation.decode import DecodeSettings, GreedyDecoder, unsupported_reason
from predwatch.records import Sample, prompt_identity

TEXTS = [
    "hello",
    '{"name": "Ada Lovelace", "born": 1815, "tags": ["math", "poetry"]}',
    "Q: what is 12 + 30? A:",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Extract the fields as JSON. Name: Grace Hopper; Year: 1906.",
    "def add(a, b):\n    return a + b",
    "Translate to French: good morning",
]
NEW = 12


_references: dict[tuple, list[int]] = {}


def generate_alone(model, ids: list[int], eos: list[int], new: int, min_new: int = 0) -> list[int]:
    """New tokens of a one-prompt ``model.generate``, cut after the first EOS (memoised)."""
    key = (id(model), tuple(ids), tuple(eos), new, min_new)
    if key not in _references:
        _references[key] = _generate_alone(model, ids, eos, new, min_new)
    return _references[key]


def _generate_alone(model, ids: list[int], eos: list[int], new: int, min_new: int) -> list[int]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new, min_new_tokens=min_new or None, do_sample=False,
            pad_token_id=0, eos_token_id=eos,
        )  # fmt: skip
    model.train(was_training)  # the session's tiny model is shared
    tokens = out[0, len(ids) :].tolist()
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:end]


@pytest.fixture(scope="module")
def prompts(tiny_model) -> list[list[int]]:
    _, tok = tiny_model
    return [tok(t)["input_ids"] for t in TEXTS]


@pytest.fixture(scope="module")
def eos_sets(tiny_model, prompts) -> dict[str, list[int]]:
    """The tokenizer's EOS alone; and extra EOS ids that end the answers at varied lengths."""
    model, tok = tiny_model
    full = [generate_alone(model, p, [tok.eos_token_id], NEW, min_new=NEW) for p in prompts]
    varied = {tok.eos_token_id} | {full[i][(3 * i) % NEW] for i in range(0, len(full), 2)}
    return {"eos": [tok.eos_token_id], "varied": sorted(varied)}


def run_loop(model, prompts, eos, *, slots, budget=None, min_new=0, stopped=None):
    settings = DecodeSettings(
        slots=slots, max_batch_tokens=budget, max_new_tokens=NEW, min_new_tokens=min_new,
        eos_ids=frozenset(eos), pad_id=0, stopped=stopped,
    )  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return GreedyDecoder(model, torch.device("cpu"), settings).run(prompts)
    finally:
        model.train(was_training)


@pytest.mark.parametrize("slots", [1, 2, 3, 8])
@pytest.mark.parametrize("eos_name", ["eos", "varied"])
def test_the_loop_gives_generates_tokens_across_batch_sizes_and_eos_sets(
    tiny_model, prompts, eos_sets, slots, eos_name
):
    model, _ = tiny_model
    eos = eos_sets[eos_name]
    expected = [generate_alone(model, p, eos, NEW) for p in prompts]
    assert run_loop(model, prompts, eos, slots=slots) == expected
    if eos_name == "varied":  # the set really makes answers of different lengths
        assert len({len(e) for e in expected}) >= 3 and min(len(e) for e in expected) < NEW


def test_refilled_prompts_longer_and_shorter_than_the_cache_give_the_same_tokens(
    tiny_model, prompts, eos_sets
):
    model, _ = tiny_model
    eos = eos_sets["varied"]
    # Unsorted on purpose: refills are sometimes longer than the cache, sometimes shorter.
    order = [3, 4, 0, 1, 6, 2, 7, 5]
    chosen = [prompts[i] for i in order]
    expected = [generate_alone(model, p, eos, NEW) for p in chosen]
    assert run_loop(model, chosen, eos, slots=3) == expected


def test_prefill_chunks_hold_consecutive_rows_within_the_padded_token_budget(monkeypatch):
    from predwatch.generation import decode

    monkeypatch.setattr(decode, "_PREFILL_TOKENS", 12)
    rows = [[1] * n for n in (2, 3, 3, 5, 20, 1, 4)]
    chunks = decode._prefill_chunks(rows)
    assert chunks == [(0, 3), (3, 4), (4, 5), (5, 7)]  # 3x3, 1x5, a 20 alone, 2x4
    assert [k for a, b in chunks for k in range(a, b)] == list(range(len(rows)))
    for a, b in chunks:
        assert b - a == 1 or (b - a) * max(len(r) for r in rows[a:b]) <= 12
    assert decode._prefill_chunks([[1]]) == [(0, 1)]


@pytest.mark.parametrize("budget", [1, 40])
@pytest.mark.parametrize("slots", [3, 8])
def test_prompts_prefilled_in_chunks_give_generates_tokens(
    tiny_model, prompts, eos_sets, monkeypatch, budget, slots
):
    from predwatch.generation import decode

    # 1: every prompt is a chunk of its own; 40: a few short prompts share one
    monkeypatch.setattr(decode, "_PREFILL_TOKENS", budget)
    chunked = []
    original = decode.GreedyDecoder._prefill_chunk
    monkeypatch.setattr(decode.GreedyDecoder, "_prefill_chunk",
                        lambda self, rows, *a: (chunked.append(len(rows)),
                                                original(self, rows, *a))[1])  # fmt: skip
    model, _ = tiny_model
    eos = eos_sets["varied"]
    by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for order in (by_length, [3, 4, 0, 1, 6, 2, 7, 5]):
        chosen = [prompts[i] for i in order]
        expected = [generate_alone(model, p, eos, NEW) for p in chosen]
        chunked.clear()
        assert run_loop(model, chosen, eos, slots=slots) == expected
        assert len(chunked) > (len(chosen) + slots - 1) // slots  # more forwards than admissions
        if budget == 1:
            assert max(chunked) == 1
        elif order is by_length:  # the shortest prompts (2, 3 and 13 tokens) share a chunk
            assert max(chunked) == 3


def test_min_new_tokens_and_a_token_budget_keep_generates_tokens(tiny_model, prompts, eos_sets):
    model, _ = tiny_model
    eos = eos_sets["varied"]
    expected = [generate_alone(model, p, eos, NEW, min_new=5) for p in prompts]
    assert all(len(e) >= 5 for e in expected)
    assert run_loop(model, prompts, eos, slots=8, budget=150, min_new=5) == expected


def test_a_stop_check_ends_a_row_early(tiny_model, prompts, eos_sets):
    model, _ = tiny_model
    eos = eos_sets["eos"]
    full = [generate_alone(model, p, eos, NEW) for p in prompts]
    got = run_loop(model, prompts, eos, slots=4, stopped=lambda ids: len(ids) >= 3)
    assert got == [f[:3] for f in full]


# --- HFGenerator picks the loop when it can, generate otherwise -----------------------------


def samples(texts=TEXTS) -> list[Sample]:
    return [Sample(prompt_id=prompt_identity(t), source_index=i, prompt=t)
            for i, t in enumerate(texts)]  # fmt: skip


def test_hf_generator_answers_with_the_loop_like_generate_with_several_eos_ids(
    tiny_model, prompts, eos_sets
):
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    model.generation_config.eos_token_id = eos_sets["varied"]
    generator = HFGenerator(model, tok)
    rows = generator.generate(samples(), {"max_new_tokens": NEW, "batch_size": 3})
    assert model.training  # the model's mode is restored
    assert generator.describe()["decoding"].startswith("predwatch greedy loop")
    for row, p in zip(rows, prompts, strict=True):
        expected = generate_alone(model, p, eos_sets["varied"], NEW)
        assert row.completion_tokens == len(expected)
        assert row.text == tok.decode(expected, skip_special_tokens=True)
        assert row.finish_reason == ("eos" if expected[-1] in eos_sets["varied"] else "length")


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"num_beams": 2}, "num_beams=2"),
        ({"do_sample": True}, "do_sample=True"),
        ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"),
    ],
)
def test_what_the_loop_cannot_do_goes_to_generate_and_says_so(tiny_model, params, reason):
    generator = HFGenerator(*tiny_model)
    rows = generator.generate(samples()[:3], {"max_new_tokens": 4, **params})
    assert all(r.error is None and r.completion_tokens for r in rows)
    assert generator.describe()["decoding"] == f"transformers generate per planned batch ({reason})"


def test_a_generation_config_with_another_logits_processor_is_left_to_generate(tiny_model):
    model, _ = tiny_model
    assert unsupported_reason(model, GenerationConfig(no_repeat_ngram_size=3)) == (
        "no_repeat_ngram_size=3"
    )
    assert unsupported_reason(model, GenerationConfig(suppress_tokens=[5])) == (
        "suppress_tokens=[5]"
    )
    assert unsupported_reason(model, GenerationConfig(max_new_tokens=5)) is None


def test_a_sliding_window_model_is_left_to_generate():
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                           sliding_window=16)  # fmt: skip
    reason = unsupported_reason(MistralForCausalLM(config), GenerationConfig())
    assert reason is not None and "sliding-window" in reason


# --- the cache buffers and the prebuilt decode mask -----------------------------------------


def test_the_slab_layer_window_follows_appends_drops_merges_and_regrowth():
    from predwatch.generation.decode import _SlabLayer

    gen = torch.Generator().manual_seed(0)

    def kv(rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(rows, 2, length, 4, generator=gen),
                torch.randn(rows, 2, length, 4, generator=gen))  # fmt: skip

    def pad(t: torch.Tensor, length: int) -> torch.Tensor:
        zeros = t.new_zeros(t.shape[0], t.shape[1], length - t.shape[2], t.shape[3])
        return torch.cat([zeros, t], dim=2)

    layer = _SlabLayer(room=3, capacity=4)
    keys, values = kv(3, 5)
    layer.update(keys, values)  # the prefill: held with room for 3 more columns and 1 more row
    ref_k, ref_v = keys, values
    for _ in range(5):  # past the room: the window moves to new buffers
        k, v = kv(3, 1)
        got_k, got_v = layer.update(k, v)
        ref_k, ref_v = torch.cat([ref_k, k], 2), torch.cat([ref_v, v], 2)
        assert torch.equal(got_k, ref_k) and torch.equal(got_v, ref_v)
    layer.move_rows([(0, 2)], 2)  # row 0 ended: the last row takes its place
    ref_k, ref_v = ref_k[[2, 1]], ref_v[[2, 1]]
    layer.drop_columns(2)
    ref_k, ref_v = ref_k[:, :, 2:], ref_v[:, :, 2:]
    assert all(torch.equal(a, b) for a, b in zip(layer.views(), (ref_k, ref_v), strict=True))
    # shorter; longer (room on the left); longer (new columns); more rows than the capacity
    for rows, length in [(1, 4), (1, 9), (1, 12), (3, 2)]:
        k, v = kv(rows, length)
        layer.append_rows(k, v, capacity=4)
        width = max(ref_k.shape[2], length)
        ref_k = torch.cat([pad(ref_k, width), pad(k, width)])
        ref_v = torch.cat([pad(ref_v, width), pad(v, width)])
        got_k, got_v = layer.views()
        assert torch.equal(got_k, ref_k) and torch.equal(got_v, ref_v)
        assert layer.get_seq_length() == width
    k, v = kv(8, 1)
    got_k, _ = layer.update(k, v)
    assert torch.equal(got_k, torch.cat([ref_k, k], 2))


def test_the_prebuilt_decode_mask_is_the_one_transformers_builds(tiny_model):
    from transformers.masking_utils import create_causal_mask

    model, _ = tiny_model
    config = model.config
    assert config._attn_implementation == "sdpa"
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    cache = DynamicCache(config=config)
    shape = (3, config.num_key_value_heads, 4, config.hidden_size // config.num_attention_heads)
    for layer in range(config.num_hidden_layers):
        cache.update(torch.zeros(shape), torch.zeros(shape), layer)  # 4 cached + 1 new token
    built = create_causal_mask(
        config=config, inputs_embeds=torch.zeros(3, 1, config.hidden_size),
        attention_mask=mask, past_key_values=cache, position_ids=torch.tensor([[2], [4], [3]]),
    )  # fmt: skip
    assert built is not None and built.dtype == torch.bool
    assert torch.equal(built, mask[:, None, None, :])


def test_cache_regrowth_and_eager_attention_keep_generates_tokens(
    tiny_model, prompts, eos_sets, monkeypatch
):
    from predwatch.generation import decode

    grown = []
    original = decode._SlabLayer._regrow
    monkeypatch.setattr(decode._SlabLayer, "_regrow",
                        lambda self, *a: (grown.append(a), original(self, *a))[1])  # fmt: skip
    model, _ = tiny_model
    eos = eos_sets["varied"]
    expected = [generate_alone(model, p, eos, NEW) for p in prompts]
    assert run_loop(model, prompts, eos, slots=2) == expected
    assert grown  # 8 prompts through 2 slots outrun the room of 12 new tokens
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")  # no prebuilt mask: transformers builds each one
    expected = [generate_alone(eager, p, eos, NEW) for p in prompts]
    assert run_loop(eager, prompts, eos, slots=3) == expected
