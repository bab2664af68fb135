"""The dataset shapes people already train on, as real ``datasets`` objects built locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets")

from predwatch.errors import DataError  # noqa: E402
from predwatch.generation.fake import FakeGenerator  # noqa: E402
from predwatch.recording.recorder import Recorder  # noqa: E402
from predwatch.records import prompt_identity  # noqa: E402
from predwatch.sampling import SkipRecord, extract_sample, select_samples  # noqa: E402
from predwatch.scoring import run_validators  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

Dataset = datasets.Dataset
DatasetDict = datasets.DatasetDict

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Time in a zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


def only(ds: Any, **kwargs: Any) -> Any:
    selection = select_samples(ds, None, **kwargs)
    return selection


# --- ShareGPT -------------------------------------------------------------------------------


def test_sharegpt_conversations_are_read_as_a_chat() -> None:
    ds = Dataset.from_list([
        {"conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Capital of France?"},
            {"from": "gpt", "value": "Paris."},
        ]},
        {"conversations": [
            {"from": "human", "value": "Weather?"},
            {"from": "gpt", "value": "Which city?"},
            {"from": "human", "value": "Oslo"},
            {"from": "gpt", "value": "Cold."},
        ]},
    ])
    first, second = only(ds).samples
    assert first.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert first.prompt == "Capital of France?"
    assert first.ground_truth == "Paris."
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    assert second.ground_truth == "Cold."
    # The same conversation in chat form is the same prompt.
    assert first.prompt_id == prompt_identity(messages=first.messages)


def test_sharegpt_tool_turns_and_an_unknown_role() -> None:
    record = {"conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "tool", "value": '{"temp": -3}'},
        {"from": "gpt", "value": "It is -3."},
    ]}
    sample = extract_sample(record, 0)
    assert [m["role"] for m in sample.messages] == ["user", "tool"]
    with pytest.raises(SkipRecord) as info:
        extract_sample({"conversations": [{"from": "bot", "value": "hi"}]}, 0)
    assert info.value.reason.startswith("ShareGPT turn 'from' is 'bot', not one of human, gpt")


# --- function calling -----------------------------------------------------------------------


def tool_rows() -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                ]},
            ],
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "chat_template_kwargs": {"enable_thinking": False},
        },
        {
            "messages": [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": "hi", "tool_calls": None},
            ],
            "tools": [WEATHER_TOOL, TIME_TOOL],
            "chat_template_kwargs": {"enable_thinking": True},
        },
    ]


def test_tools_and_template_kwargs_go_with_the_sample_as_the_dataset_gives_them() -> None:
    ds = Dataset.from_list(tool_rows())
    call, plain = only(ds).samples
    row = ds[0]
    # Exactly what TRL passes to apply_chat_template: the column's value, untouched.
    assert call.tools == row["tools"]
    assert call.chat_template_kwargs == {"enable_thinking": False}
    assert plain.chat_template_kwargs == {"enable_thinking": True}
    assert call.messages == [{"role": "user", "content": "Weather in Oslo?"}]
    # Tools are part of what the model reads, so they are part of the prompt's identity.
    assert call.prompt_id != prompt_identity(messages=call.messages)
    assert plain.ground_truth == "hi" and plain.validators == []


def test_a_final_tool_call_is_the_expected_answer_and_the_tool_call_validator_checks_it() -> None:
    call = only(Dataset.from_list(tool_rows())).samples[0]
    assert call.ground_truth == '{"arguments":{"city":"Oslo"},"name":"get_weather"}'
    assert call.validators == [{"kind": "tool_call", "allowed": ["get_weather", "get_time"]}]
    assert run_validators(call.ground_truth, call.validators).validation_pass is True
    hermes = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert run_validators(hermes, call.validators).validation_pass is True
    wrong = run_validators('{"name": "book_flight", "arguments": {}}', call.validators)
    assert wrong.validation_pass is False
    assert "not an allowed function" in wrong.validation_errors[0].message


def test_tools_as_json_text_and_arguments_as_json_text_and_several_calls() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "Weather and time in Oslo?"},
            {"role": "assistant", "tool_calls": [
                {"type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                {"type": "function",
                 "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}},
            ]},
        ],
        "tools": json.dumps([WEATHER_TOOL, TIME_TOOL]),
    }
    sample = only(Dataset.from_list([record])).samples[0]
    assert sample.tools == [WEATHER_TOOL, TIME_TOOL]
    assert json.loads(sample.ground_truth) == [
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "get_time", "arguments": {"zone": "CET"}},
    ]
    assert sample.validators[0]["multiple"] is True
    assert run_validators(sample.ground_truth, sample.validators).validation_pass is True
    with pytest.raises(SkipRecord, match="'tools' is text but not valid JSON"):
        extract_sample({**record, "tools": "[{"}, 0)


def test_a_conversational_completion_that_calls_a_tool() -> None:
    ds = Dataset.from_list([{
        "prompt": [{"role": "user", "content": "Weather in Oslo?"}],
        "completion": [{"role": "assistant", "content": None, "tool_calls": [
            {"type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}],
        "tools": [WEATHER_TOOL],
    }])
    sample = only(ds).samples[0]
    assert sample.ground_truth == '{"arguments":{"city":"Oslo"},"name":"get_weather"}'
    assert sample.validators == [{"kind": "tool_call", "allowed": ["get_weather"]}]
    assert sample.tools == ds[0]["tools"]


# --- DatasetDict ----------------------------------------------------------------------------


def test_a_dataset_dict_names_its_splits_and_which_to_pass() -> None:
    rows = [{"prompt": "a", "completion": "b"}]
    dd = DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows)})
    with pytest.raises(DataError) as info:
        select_samples(dd, 1)
    assert info.value.message == (
        "got a DatasetDict with splits 'train', 'test', not one dataset: pass one split, "
        "e.g. dataset['train'] (or load_dataset(..., split='train'))"
    )
    assert info.value.detail == {"splits": ["train", "test"]}
    assert select_samples(dd["test"], 1).samples[0].prompt == "a"


# --- multimodal -----------------------------------------------------------------------------


def test_multimodal_content_keeps_the_text_and_counts_what_was_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = Dataset.from_list([
        {"messages": [
            {"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": "What is in the picture?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ]},
        {"messages": [
            {"role": "user", "content": [
                {"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
        ]},
        {"messages": [
            {"role": "user", "content": [{"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
        ]},
    ])
    with caplog.at_level("WARNING"):
        selection = only(ds)
    first, second = selection.samples
    assert first.prompt == "What is in the picture?"  # never a repr or a JSON dump
    assert first.messages == [
        {"role": "user", "content": [{"type": "text", "text": "What is in the picture?"}]}
    ]
    assert first.ground_truth == "A cat."
    assert first.dropped_content == {"image": 1}
    assert second.dropped_content == {"image": 2}
    assert selection.dropped_content == {"image": 3}
    assert selection.skipped == {"empty prompt (no text beside the dropped parts)": 1}
    assert "left out of the chosen prompts (image: 3; their text parts are kept)" in caplog.text


def test_every_evaluation_point_says_what_its_prompts_left_out(tmp_path: Path) -> None:
    rows = [{"prompt": [{"type": "image", "image": "cat.png"},
                        {"type": "text", "text": "Name the animal."}],
             "completion": "cat"}]
    db = f"sqlite:///{tmp_path / 'p.db'}"
    recorder = Recorder({"sample_count": 1}, samples=rows, db=db,
                        spool_dir=str(tmp_path / "spool"))
    recorder.record(generator=FakeGenerator(), step=1)
    recorder.close()
    with open_store(db) as store:
        (point,) = store.eval_points(recorder.run.id)
        (row,) = store.list_predictions(recorder.run.id).items
    assert point.card["dropped_content"] == {"image": 1}
    assert row.prompt == "Name the animal."


# --- any other schema: a field mapping ------------------------------------------------------


def test_a_field_mapping_reads_a_custom_schema_with_dotted_paths() -> None:
    ds = Dataset.from_list([
        {"query": {"text": "2+2?", "lang": "en"}, "labels": {"answer": "4"}, "sys": "Math."},
        {"query": {"text": "3+3?", "lang": "en"}, "labels": {"answer": "6"}, "sys": "Math."},
    ])
    fields = {"prompt": "query.text", "completion": "labels.answer", "system": "sys"}
    first, _ = only(ds, fields=fields).samples
    assert first.messages == [
        {"role": "system", "content": "Math."}, {"role": "user", "content": "2+2?"}
    ]
    assert first.prompt == "2+2?" and first.ground_truth == "4"
    plain = only(ds, fields={"prompt": "query.text", "completion": "labels.answer"}).samples[0]
    assert plain.messages is None and plain.prompt == "2+2?"


def test_a_mapping_into_lists_and_a_record_missing_the_mapped_field() -> None:
    ds = Dataset.from_list([
        {"turns": [{"text": "Hello?"}, {"text": "Hi."}]},
        {"turns": []},
    ])
    selection = only(ds, fields={"prompt": "turns.0.text", "completion": "turns.1.text"})
    assert [(s.prompt, s.ground_truth) for s in selection.samples] == [("Hello?", "Hi.")]
    assert selection.skipped == {"no 'turns.0.text' (mapped to prompt)": 1}
    chat = only(Dataset.from_list([{"dialog": {"msgs": [
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}}]),
        fields={"messages": "dialog.msgs"}).samples[0]
    assert chat.messages == [{"role": "user", "content": "Q"}] and chat.ground_truth == "A"


def test_text_only_records_point_at_the_field_mapping() -> None:
    ds = Dataset.from_list([{"text": "### Q: 2+2\n### A: 4"}, {"text": "### Q: 1+1\n### A: 2"}])
    with pytest.raises(DataError) as info:
        select_samples(ds, 1)
    assert "no known format (keys: text); 'text' is pre-formatted text" in info.value.message
    assert "the config's 'fields'" in info.value.message
