"""Generators on a real tiny model: batching, model/tokenizer state, finish reasons, failures."""

from __future__ import annotations

import copy
import hashlib
import logging
import subprocess
import sys

import pytest
import torch

from predwatch.config import PredictionsConfig
from predwatch.errors import ConfigError
from predwatch.generation import FakeGenerator, Generator, HFGenerator
from predwatch.generation.base import default_batch_size, plan_batches
from predwatch.records import Sample, prompt_identity

PROMPTS = [
    "hello",
    '{"name": "Ada Lovelace", "born": 1815, "tags": ["math", "poetry"]}',
    "Q: what is 12 + 30? A:",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Extract the fields as JSON. Name: Grace Hopper; Year: 1906.",
]
GREEDY = {"max_new_tokens": 8, "batch_size": 4}


def sample(prompt: str, index: int = 0, **fields) -> Sample:
    return Sample(prompt_id=prompt_identity(prompt), source_index=index, prompt=prompt, **fields)


def samples(prompts=PROMPTS) -> list[Sample]:
    return [sample(p, i) for i, p in enumerate(prompts)]


def reference_ids(model, tok, input_ids: list[int], max_new_tokens: int) -> list[int]:
    """New tokens of a plain one-prompt ``model.generate``, independent of predwatch."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([input_ids]),
                attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
    finally:
        model.train(was_training)
    return out[0, len(input_ids) :].tolist()


def reference_answer(model, tok, input_ids: list[int], max_new_tokens: int) -> str:
    return tok.decode(
        reference_ids(model, tok, input_ids, max_new_tokens), skip_special_tokens=True
    )


@pytest.fixture(scope="module")
def generator(tiny_model) -> HFGenerator:
    model, tok = tiny_model
    return HFGenerator(model, tok)


@pytest.fixture(scope="module")
def answers(generator) -> list:
    """Greedy batched answers to PROMPTS (computed once)."""
    return generator.generate(samples(), GREEDY)


# --- batching ------------------------------------------------------------------------------


def test_batched_answers_equal_one_by_one_generate_answers_in_fp32(tiny_model, answers):
    model, tok = tiny_model
    expected = [reference_answer(model, tok, tok(p)["input_ids"], 8) for p in PROMPTS]
    assert [a.text for a in answers] == expected
    assert all(a.error is None and a.text for a in answers)


def test_answers_come_back_in_the_callers_order(generator, answers):
    reordered = [5, 3, 0, 4, 1, 2]
    rows = generator.generate([samples()[i] for i in reordered], {**GREEDY, "batch_size": 2})
    assert [r.text for r in rows] == [answers[i].text for i in reordered]


def test_token_counts_and_latency_are_recorded(tiny_model, answers):
    _, tok = tiny_model
    for prompt, row in zip(PROMPTS, answers, strict=True):
        assert row.prompt_tokens == len(tok(prompt)["input_ids"])
        assert row.completion_tokens == 8 and row.finish_reason == "length"
        assert row.total_tokens == row.prompt_tokens + 8
        assert row.latency_ms is not None and row.latency_ms > 0


def test_max_batch_tokens_gives_the_same_answers(generator, answers):
    rows = generator.generate(samples(), {"max_new_tokens": 8, "max_batch_tokens": 120})
    assert [r.text for r in rows] == [a.text for a in answers]


def test_an_unset_batch_size_follows_the_device(generator, answers):
    """Unset: 32 rows per batch for a model on the CPU, 16 on an accelerator; the answers do not
    depend on it."""
    assert default_batch_size("cpu") == 32 and default_batch_size("cuda") == 16
    assert PredictionsConfig().batch_size is None
    assert generator.batch_size({}) == 32 and generator.batch_size({"batch_size": 5}) == 5
    rows = generator.generate(samples(), {"max_new_tokens": 8})
    assert [r.text for r in rows] == [a.text for a in answers]


def test_batch_plan_sorts_longest_first_and_holds_every_sample_once():
    lengths = [5, 50, 7, 49, 6, 51]
    assert plan_batches(lengths, max_new_tokens=10, batch_size=2) == [[5, 1], [3, 2], [4, 0]]
    # (rows x beams x (longest prompt + new tokens)) <= 130; an oversized sample runs alone.
    by_tokens = plan_batches(
        [100, 10, 11, 12], max_new_tokens=10, batch_size=99, max_batch_tokens=70
    )
    assert by_tokens == [[0], [3, 2, 1]]
    assert plan_batches([10, 11, 12], max_new_tokens=10, batch_size=9, max_batch_tokens=70,
                        num_beams=2) == [[2], [1], [0]]  # fmt: skip
    assert plan_batches([], max_new_tokens=1, batch_size=4) == []


# --- the trainer's state is left as it was ------------------------------------------------


def test_trainer_tokenizer_is_left_untouched(tiny_model, answers):
    model, tok = tiny_model
    trainer_tok = copy.deepcopy(tok)
    trainer_tok.padding_side = "right"
    trainer_tok.pad_token = None  # like many base models: padding has to fall back to eos
    generator = HFGenerator(model, trainer_tok)
    rows = generator.generate(samples(), GREEDY)
    assert trainer_tok.padding_side == "right" and trainer_tok.pad_token is None
    assert [r.text for r in rows] == [a.text for a in answers]  # the pad id never matters
    facts = generator.describe()
    assert facts["padding_side"] == "left" and facts["pad_token"] == "</s>"
    assert facts["pad_token_from_eos"] is True


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored_per_module(tiny_model, generator, training):
    model, _ = tiny_model
    model.train(training)
    model.model.layers[0].train(not training)  # a module in the other mode stays so
    try:
        generator.generate(samples()[:2], GREEDY)
        assert model.training is training
        assert model.model.layers[0].training is (not training)
        assert model.model.layers[1].training is training
    finally:
        model.train()


def test_activation_checkpointing_is_off_while_generating_and_restored(tiny_model):
    model = copy.deepcopy(tiny_model[0])
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # what trainers set when checkpointing
    layer = model.model.layers[0]
    checkpoint_func = layer._gradient_checkpointing_func
    seen = []
    layer.register_forward_pre_hook(
        lambda *_: seen.append(
            (layer.gradient_checkpointing, model.config.use_cache, layer.training)
        )
    )
    HFGenerator(model, tiny_model[1]).generate(samples()[:2], GREEDY)
    assert seen and set(seen) == {(False, True, False)}
    assert model.is_activation_checkpointing and layer.gradient_checkpointing
    assert layer._gradient_checkpointing_func is checkpoint_func  # the trainer's kwargs survive
    assert model.config.use_cache is False and model.training


# --- precision and adapters ---------------------------------------------------------------


def test_bf16_autocast_on_cpu_produces_answers(tiny_model):
    model, tok = tiny_model
    generator = HFGenerator(model, tok, precision="bf16")
    rows = generator.generate(samples(), GREEDY)
    assert all(r.error is None and r.completion_tokens == 8 for r in rows)
    assert generator.describe()["precision"] == "bf16"
    assert next(model.parameters()).dtype == torch.float32  # autocast, not a cast


def test_precision_is_picked_from_a_bf16_model(tiny_model):
    model = copy.deepcopy(tiny_model[0]).to(torch.bfloat16)
    generator = HFGenerator(model, tiny_model[1])
    rows = generator.generate(samples()[:3], GREEDY)
    assert all(r.error is None and r.completion_tokens == 8 for r in rows)
    assert generator.describe()["precision"] == "bf16"
    assert generator.describe()["dtype"] == "bfloat16"


def test_the_described_dtype_is_the_one_holding_most_parameter_elements(tiny_model):
    from predwatch.generation.hf_support import parameter_dtype
    from predwatch.generation.tiny import build_tiny_model

    model, _ = build_tiny_model(seed=1, tokenizer=tiny_model[1])
    model.to(torch.bfloat16)
    bf16_tensors = sum(1 for _ in model.parameters())
    # more fp32 tensors than bf16 ones (as LoRA adapters kept in fp32 can be), but small ones
    model.extra = torch.nn.ParameterList(
        torch.nn.Parameter(torch.zeros(4)) for _ in range(bf16_tensors + 5))
    assert parameter_dtype(model) == "bfloat16"
    assert HFGenerator(model, tiny_model[1]).describe()["dtype"] == "bfloat16"


def test_a_bf16_model_with_fp32_lora_adapters_is_described_as_bf16(tiny_model):
    peft = pytest.importorskip("peft")
    from predwatch.generation.hf_support import parameter_dtype
    from predwatch.generation.tiny import build_tiny_model

    model, _ = build_tiny_model(seed=1, tokenizer=tiny_model[1])
    config = peft.LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model.to(torch.bfloat16), config)
    for name, param in lora.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # adapters trained in fp32 on a bf16 base
    dtypes = [p.dtype for p in lora.parameters()]
    assert dtypes.count(torch.float32) > dtypes.count(torch.bfloat16)  # counting tensors: fp32
    assert parameter_dtype(lora) == "bfloat16"


def test_unknown_precision_is_a_config_error(tiny_model):
    with pytest.raises(ConfigError, match="unknown precision"):
        HFGenerator(*tiny_model, precision="int3")


def test_a_lora_model_generates_and_describes_its_adapter(tiny_model, answers):
    peft = pytest.importorskip("peft")
    model, tok = tiny_model
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM")  # fmt: skip
    lora = peft.get_peft_model(copy.deepcopy(model), config)
    generator = HFGenerator(lora, tok)
    rows = generator.generate(samples(), GREEDY)
    # A fresh LoRA adapter starts as a no-op (B = 0): the answers are the base model's.
    assert [r.text for r in rows] == [a.text for a in answers]
    assert lora.training
    facts = generator.describe()
    assert facts["adapter_name"] == "default" and facts["adapter_rank"] == 4
    assert facts["adapter_type"] == "LORA"
    assert facts["model_class"] == "LlamaForCausalLM"
    assert facts["wrapper_class"] == "PeftModelForCausalLM"


# --- finish reasons -----------------------------------------------------------------------


@pytest.mark.parametrize("pad", ["<pad>", None], ids=["pad", "pad-is-eos"])
def test_a_stop_string_cuts_the_answer_and_stops_generation(tiny_model, answers, pad):
    model, tok = tiny_model
    trainer_tok = copy.deepcopy(tok)
    trainer_tok.pad_token = pad  # with pad = eos, rows stopped early are padded with eos tokens
    full = answers[0].text
    at = next(i for i in range(2, len(full)) if full[i].isalnum() and full.find(full[i]) == i)
    stop = {**GREEDY, "stop_strings": [full[at]]}
    # The other prompt runs on after the first stops, so the first row gets padded.
    row, other = HFGenerator(model, trainer_tok).generate([samples()[0], samples()[2]], stop)
    assert row.finish_reason == "stop"
    assert row.text == full[:at]
    # Counted: the tokens up to the one completing the stop string, none of the padding.
    new = reference_ids(model, tok, tok(PROMPTS[0])["input_ids"], 8)
    needed = next(k for k in range(1, 9) if full[at] in tok.decode(new[:k]))
    assert row.completion_tokens == needed < 8
    assert other.text == answers[2].text.split(full[at])[0]


def test_max_new_tokens_ends_with_length(generator):
    row = generator.generate([samples()[2]], {"max_new_tokens": 3})[0]
    assert (row.finish_reason, row.completion_tokens) == ("length", 3)


def test_an_eos_ends_with_eos_and_is_counted(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    prompt_ids = tok("Q: 2+2? A:")["input_ids"]
    ids = torch.tensor([prompt_ids + [tok.eos_token_id]])
    labels = torch.full_like(ids, -100)
    labels[0, -1] = tok.eos_token_id  # teach it to answer with EOS straight away
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(10):
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    row = HFGenerator(model, tok).generate([sample("Q: 2+2? A:")], {"max_new_tokens": 8})[0]
    assert row.finish_reason == "eos"
    assert row.text == ""
    assert row.completion_tokens == 1  # the EOS itself, not the padding after it


# --- failures -----------------------------------------------------------------------------


def test_a_prompt_too_long_for_the_model_gets_an_error_row_and_its_batch_mates_answers(
    generator, answers
):
    too_long = sample("a " * 600, 99)
    rows = generator.generate([samples()[0], too_long, samples()[1]], GREEDY)
    assert rows[1].finish_reason == "error" and rows[1].text == ""
    assert rows[1].error is not None and "512" in rows[1].error and "ValueError" in rows[1].error
    assert [rows[0].text, rows[2].text] == [answers[0].text, answers[1].text]


def _fail_when(model, condition, exc):
    """Make the embedding layer raise ``exc`` for inputs where ``condition(input_ids)``."""

    def hook(_module, args):
        if condition(args[0]):
            raise exc

    return model.get_input_embeddings().register_forward_pre_hook(hook)


def test_a_failing_sample_is_isolated_by_halving_and_logged_once(tiny_model, answers, caplog):
    model, tok = tiny_model
    poison = tok("x")["input_ids"][-1]  # PROMPTS[3] is "x"
    handle = _fail_when(model, lambda ids: bool((ids == poison).any()), RuntimeError("kaboom"))
    try:
        with caplog.at_level(logging.WARNING, logger="predwatch.generation.hf"):
            rows = HFGenerator(model, tok).generate(samples(), {**GREEDY, "batch_size": 8})
    finally:
        handle.remove()
    assert rows[3].finish_reason == "error" and rows[3].error == "RuntimeError: kaboom"
    assert rows[3].prompt_tokens == len(tok("x")["input_ids"])
    others = [r.text for i, r in enumerate(rows) if i != 3]
    assert others == [a.text for i, a in enumerate(answers) if i != 3]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.ERROR
    assert "1 recorded as error rows" in caplog.records[0].getMessage()
    assert model.training  # restored even though generation raised


def test_out_of_memory_batches_are_retried_smaller(tiny_model, answers, caplog):
    model, tok = tiny_model
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    handle = _fail_when(model, lambda ids: ids.shape[0] > 3, oom)
    try:
        with caplog.at_level(logging.WARNING, logger="predwatch.generation.hf"):
            rows = HFGenerator(model, tok).generate(samples(), {**GREEDY, "batch_size": 8})
    finally:
        handle.remove()
    assert [r.text for r in rows] == [a.text for a in answers]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "0 recorded as error rows" in caplog.records[0].getMessage()


def test_invalid_generation_parameters_are_a_config_error(generator):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generator.generate(samples()[:1], {"max_new_tokens": 0})


# --- sampling -----------------------------------------------------------------------------


def test_sampling_with_a_seed_is_reproducible_and_leaves_torchs_rng_alone(generator):
    params = {"max_new_tokens": 8, "do_sample": True, "seed": 3, "batch_size": 2}
    chosen = samples()[:3]
    state = torch.get_rng_state()
    first = [r.text for r in generator.generate(chosen, params)]
    second = [r.text for r in generator.generate(chosen, params)]
    other = [r.text for r in generator.generate(chosen, {**params, "seed": 4})]
    assert torch.equal(torch.get_rng_state(), state)
    assert first == second
    assert first != other


# --- prompts ------------------------------------------------------------------------------


def test_chat_samples_use_the_chat_template(tiny_model, generator):
    model, tok = tiny_model
    messages = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "hi"}]
    row = generator.generate([sample("hi", messages=messages)], GREEDY)[0]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1  # the template's own BOS, not a second one
    assert row.prompt_tokens == len(ids)
    assert row.text == reference_answer(model, tok, ids, 8)


def test_chat_samples_without_a_template_become_a_transcript(tiny_model):
    model, tok = tiny_model
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    messages = [{"role": "user", "content": "hi"}]
    row = HFGenerator(model, plain).generate([sample("hi", messages=messages)], GREEDY)[0]
    ids = tok("user: hi\nassistant:")["input_ids"]
    assert row.prompt_tokens == len(ids)
    assert row.text == reference_answer(model, tok, ids, 8)


# --- describe -----------------------------------------------------------------------------


def test_describe_gives_reproducibility_facts(tiny_model, generator):
    _, tok = tiny_model
    facts = generator.describe()
    assert facts["model_class"] == "LlamaForCausalLM" and facts["wrapper_class"] is None
    assert facts["precision"] == "fp32" and facts["dtype"] == "float32"
    assert facts["device"] == "cpu" and facts["padding_side"] == "left"
    assert facts["chat_template_hash"] == hashlib.sha256(tok.chat_template.encode()).hexdigest()
    assert (
        facts["tokenizer_hash"]
        == HFGenerator(tiny_model[0], copy.deepcopy(tok)).describe()["tokenizer_hash"]
    )
    assert {"torch", "transformers"} <= set(facts["library_versions"])
    assert "adapter_name" not in facts


def test_importing_generation_does_not_import_torch():
    code = (
        "import sys, predwatch.generation as g; assert 'torch' not in sys.modules;"
        "assert 'transformers' not in sys.modules; g.FakeGenerator; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_generators_satisfy_the_protocol(generator):
    assert isinstance(generator, Generator)
    assert isinstance(FakeGenerator(), Generator)


# --- FakeGenerator ------------------------------------------------------------------------


def test_fake_generator_answers_the_ground_truth_by_default():
    s = sample("capital of France?", ground_truth="Paris is the capital")
    row = FakeGenerator().generate([s], {})[0]
    assert row.text == "Paris is the capital"
    assert (row.prompt_tokens, row.completion_tokens, row.finish_reason) == (3, 4, "eos")


def test_fake_generator_answers_from_a_table_or_a_function():
    a, b, c = sample("one"), sample("two"), sample("three")
    table = FakeGenerator({a.prompt_id: "by id", "two": "by prompt"})
    assert [r.text for r in table.generate([a, b, c], {})] == ["by id", "by prompt", ""]
    upper = FakeGenerator(lambda s: s.prompt.upper())
    assert [r.text for r in upper.generate([a, b], {})] == ["ONE", "TWO"]
    assert upper.calls == [[a.prompt_id, b.prompt_id]]


def test_fake_generator_follows_stop_strings_and_max_new_tokens():
    s = sample("q")
    fake = FakeGenerator(lambda _: "one two three. four five")
    stopped = fake.generate([s], {"stop_strings": ["."]})[0]
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == (
        "one two three", "stop", 3
    )  # fmt: skip
    cut = fake.generate([s], {"max_new_tokens": 2})[0]
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("one two", "length", 2)


def test_fake_generator_fails_on_chosen_samples_without_dropping_them():
    good, bad = sample("good", ground_truth="yes"), sample("bad")
    rows = FakeGenerator(fail_on=lambda s: s.prompt == "bad").generate([good, bad], {})
    assert [r.text for r in rows] == ["yes", ""]
    assert rows[1].finish_reason == "error" and rows[1].error.startswith("RuntimeError:")
