"""The locally built tiny tokenizer and model."""

from __future__ import annotations

import torch

from predwatch.generation.tiny import CHAT_TEMPLATE, build_tiny_model, build_tokenizer


def test_tokenizer_round_trips_any_text(tiny_model):
    _, tok = tiny_model
    for text in ['{"a": [1, 2.5e3, null], "b": "x"}', "héllo wörld — 你好 🙂\n\ttabs", ""]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_has_distinct_special_tokens_and_prepends_bos(tiny_model):
    _, tok = tiny_model
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    assert tok("hi")["input_ids"][0] == tok.bos_token_id
    assert len(tok) == 512


def test_chat_template_renders_roles_and_generation_prompt(tiny_model):
    _, tok = tiny_model
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tok.chat_template == CHAT_TEMPLATE
    assert text == "<s><|system|>\nBe brief.</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n"


def test_tokenizer_trains_on_a_given_corpus_and_size():
    tok = build_tokenizer(["aaa bbb aaa bbb ccc"] * 5, vocab_size=300)
    assert 259 <= len(tok) <= 300  # 256 bytes + 3 special tokens + a few merges
    assert tok.decode(tok("zzz")["input_ids"], skip_special_tokens=True) == "zzz"


def test_model_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(tiny_model):
    model, tok = tiny_model
    state = torch.get_rng_state()
    again, _ = build_tiny_model(seed=0, tokenizer=tok)
    other, _ = build_tiny_model(seed=1, tokenizer=tok)
    assert torch.equal(torch.get_rng_state(), state)
    pairs = list(zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)


def test_model_matches_the_tokenizer_and_starts_in_training_mode(tiny_model):
    _, tok = tiny_model
    model, _ = build_tiny_model(
        seed=3, tokenizer=tok, hidden_size=32, num_layers=1, max_positions=64
    )
    assert model.training
    assert model.config.vocab_size == len(tok)
    assert model.config.max_position_embeddings == 64
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    inputs = tok(["hello"], return_tensors="pt")
    logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tok))
