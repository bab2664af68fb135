"""A TRL ``SFTTrainer`` run on a dataset with a ``tools`` column and ``chat_template_kwargs``:
predwatch's prompt is the one TRL trained on, token for token (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from predwatch import PredictionsCallback  # noqa: E402
from predwatch.generation.hf import HFGenerator  # noqa: E402
from predwatch.generation.tiny import build_tiny_model  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

pytestmark = pytest.mark.slow

# A template that renders what TRL passes: the tools, a template kwarg and tool calls.
TOOLS_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|system|>\nTools: {{ tools | tojson }}"
    "{% if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}"
    "{{ eos_token }}\n{% endif %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
    "<tool_call>{{ call['function'] | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ message['content'] }}{% endif %}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
CITIES = ["Oslo", "Lima", "Pune", "Kyiv", "Rome", "Doha", "Baku", "Bern"]


def call(city: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}


def rows(shape: str) -> list[dict[str, Any]]:
    out = []
    for i, city in enumerate(CITIES):
        question = {"role": "user", "content": f"Weather in {city}?"}
        row: dict[str, Any] = (
            {"prompt": [question], "completion": [call(city)]} if shape == "prompt-completion"
            else {"messages": [question, call(city)]}
        )
        # TRL reads tools as a list or as JSON text (a datasets column holds one of them).
        row["tools"] = json.dumps([WEATHER]) if shape == "prompt-completion" else [WEATHER]
        row["chat_template_kwargs"] = {"enable_thinking": bool(i % 3)}  # changes the render
        out.append(row)
    return out


@pytest.mark.parametrize("shape", ["prompt-completion", "messages"])
def test_the_recorded_prompt_is_the_prompt_trl_trained_on(
    shape: str, sqlite_url: str, tmp_path: Path
) -> None:
    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.chat_template = TOOLS_TEMPLATE
    dataset = Dataset.from_list(rows(shape))
    cb = PredictionsCallback(
        {"sample_count": 4, "max_new_tokens": 4, "sample_frequency": "epoch"},
        dataset=dataset, db=sqlite_url, spool_dir=str(tmp_path / "spool"),
    )
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=dataset, callbacks=[cb],
        args=SFTConfig(
            output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
            report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
            disable_tqdm=True, max_length=512, seed=0,
        ),
    )
    trainer.train()
    trained = trainer.train_dataset
    generator = HFGenerator(trainer.model, tokenizer)
    with open_store(sqlite_url) as store:
        recorded = store.list_predictions(cb.recorder.run.id).items
    assert len(recorded) == 4
    for sample, row in zip(cb.recorder.samples, sorted(recorded, key=lambda r: r.sample_index),
                           strict=True):
        ids = list(trained[sample.source_index]["input_ids"])
        if shape == "prompt-completion":
            # What TRL trained on before the completion starts: its labels mask the prompt.
            labels = list(trained[sample.source_index]["labels"])
            trl_prompt = ids[:next(i for i, label in enumerate(labels) if label != -100)]
        else:
            trl_prompt = ids[: len(generator._encode(sample))]
        ours = generator._encode(sample)
        assert ours == trl_prompt
        assert len(ids) > len(ours)  # the answer TRL trained on follows
        rendered = tokenizer.decode(ours)
        assert "Tools: [{" in rendered and "get_weather" in rendered
        assert rendered.endswith("<|assistant|>\n")
        assert ("/no_think" in rendered) == (sample.chat_template_kwargs == {
            "enable_thinking": False})
        assert row.prompt_tokens == len(ours)
        city = CITIES[sample.source_index]
        assert row.ground_truth == json.dumps(
            {"arguments": {"city": city}, "name": "get_weather"}, separators=(",", ":"))
        assert row.validation_kind == "tool_call"
