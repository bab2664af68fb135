"""Sampling: every record format, every source kind, reproducibility, and honest error reports."""

from __future__ import annotations

import gzip
import json
import logging
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from predwatch.errors import DataError
from predwatch.records import prompt_identity
from predwatch.sampling import (
    LineProblem,
    SkipRecord,
    SourceRecord,
    extract_sample,
    open_records,
    readers,
    select_samples,
)
from predwatch.sampling.formats import TEXT_HINT

CHAT = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ]
}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def numbered(count: int) -> list[dict[str, str]]:
    return [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(count)]


# --- formats -------------------------------------------------------------------------------


def test_chat_prompt_is_the_conversation_before_the_final_assistant_turn() -> None:
    sample = extract_sample(CHAT, 7, source_id="train.jsonl")
    assert sample.messages == CHAT["messages"][:-1]  # system and earlier turns included
    assert sample.prompt == "And 3+3?"  # displayed: the last user turn
    assert sample.ground_truth == "6"
    assert sample.prompt_id == prompt_identity(messages=CHAT["messages"][:-1])
    assert (sample.source_index, sample.sample_source_id) == (7, "train.jsonl")


def test_chat_without_final_assistant_turn_is_all_prompt_and_has_no_truth() -> None:
    turns = CHAT["messages"][:-1]
    sample = extract_sample({"messages": turns}, 0)
    assert sample.messages == turns
    assert sample.ground_truth is None
    assert sample.prompt == "And 3+3?"


def test_prompt_id_excludes_the_answer() -> None:
    first = extract_sample({"prompt": "Capital of France?", "completion": "Paris"}, 0)
    second = extract_sample({"prompt": "Capital of France?", "completion": "Lyon"}, 1)
    assert first.prompt_id == second.prompt_id == prompt_identity(prompt="Capital of France?")
    chat_a = {"messages": CHAT["messages"][:-1] + [{"role": "assistant", "content": "6"}]}
    chat_b = {"messages": CHAT["messages"][:-1] + [{"role": "assistant", "content": "7"}]}
    assert extract_sample(chat_a, 0).prompt_id == extract_sample(chat_b, 0).prompt_id


@pytest.mark.parametrize(
    ("record", "prompt", "truth"),
    [
        ({"prompt": "p", "completion": "c"}, "p", "c"),
        ({"prompt": "p", "response": "r"}, "p", "r"),
        ({"prompt": "p", "chosen": "good", "rejected": "bad"}, "p", "good"),
        ({"prompt": "p alone"}, "p alone", None),
        ({"instruction": "Translate.", "input": "chat", "output": "cat"},
         "Translate.\n\nchat", "cat"),
        ({"instruction": "Say hi.", "input": "", "output": "hi"}, "Say hi.", "hi"),
        ({"instruction": "Say hi.", "output": "hi"}, "Say hi.", "hi"),
        ({"question": "2+2?", "answer": "4"}, "2+2?", "4"),
        ({"question": "2+2?", "answer": 4}, "2+2?", "4"),
        ({"input": "in", "output": "out"}, "in", "out"),
        ({"input": "in", "response": "resp"}, "in", "resp"),
    ],
)
def test_text_formats_give_prompt_and_truth(record: dict, prompt: str, truth: str | None) -> None:
    sample = extract_sample(record, 0)
    assert (sample.prompt, sample.ground_truth, sample.messages) == (prompt, truth, None)
    assert sample.prompt_id == prompt_identity(prompt=prompt)


def test_structured_answer_becomes_canonical_json_text() -> None:
    record = {"prompt": "Give JSON", "completion": {"b": 1, "a": [True, None]}}
    assert extract_sample(record, 0).ground_truth == '{"a":[true,null],"b":1}'


def test_conversational_prompt_and_completion_lists() -> None:
    record = {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "completion": [{"role": "assistant", "content": "Hello."}],
    }
    sample = extract_sample(record, 0)
    assert sample.messages == [{"role": "user", "content": "Hi?"}]
    assert (sample.prompt, sample.ground_truth) == ("Hi?", "Hello.")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"text": "x", "label": 1}, "no known format (keys: label, text)" + TEXT_HINT),
        ({"input": "x"}, "no known format (keys: input)"),
        ({"prompt": "   ", "completion": "x"}, "empty prompt"),
        ({"messages": "hello"}, "'messages' is not a list of {role, content} objects"),
        ({"messages": []}, "'messages' is empty"),
        ({"prompt": [], "completion": "x"}, "'prompt' is empty"),
        (["not", "a", "record"], "not a JSON object (got list)"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "chat has only an assistant turn"),
    ],
)
def test_records_in_no_known_format_are_skipped_with_a_reason(record: dict, reason: str) -> None:
    with pytest.raises(SkipRecord) as info:
        extract_sample(record, 0)
    assert info.value.reason == reason


# --- selection ------------------------------------------------------------------------------


def test_unknown_format_records_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl",
                       numbered(3) + [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    selection = select_samples(path, None)
    assert [s.source_index for s in selection.samples] == [0, 1, 2]
    assert selection.skipped == {"no known format (keys: label, text)" + TEXT_HINT: 2}
    assert (selection.total_records, selection.valid_records) == (5, 3)


def test_malformed_jsonl_lines_are_reported_with_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"prompt": "a", "completion": "b"}\n'  # line 1
        "\n"  # line 2: blank, not an entry
        '{"prompt": "c", "completion": \n'  # line 3: broken JSON
        "[1, 2]\n"  # line 4: not an object
        '{"prompt": "d"}\n',  # line 5
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="predwatch.sampling"):
        selection = select_samples(path, None)
    assert [(s.prompt, s.source_index) for s in selection.samples] == [("a", 0), ("d", 3)]
    assert [(p.file, p.line, p.index) for p in selection.malformed] == [
        ("train.jsonl", 3, 1), ("train.jsonl", 4, 2)]
    assert selection.malformed[0].reason.startswith("invalid JSON: Expecting value")
    assert selection.malformed[1].reason == "not a JSON object (got array)"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 malformed entries" in warning.getMessage()
    assert "train.jsonl:3" in warning.getMessage() and "train.jsonl:4" in warning.getMessage()


def test_file_with_no_usable_record_raises_saying_why(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "labels.jsonl", [{"text": "a", "label": 0}] * 3)
    with pytest.raises(DataError) as info:
        select_samples(path, 5)
    assert "labels.jsonl" in info.value.message
    assert "3 records skipped (no known format (keys: label, text);" in info.value.message


def test_missing_empty_and_unsupported_files_raise_data_error_naming_the_file(
    tmp_path: Path,
) -> None:
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        select_samples(tmp_path / "nope.jsonl", 5)
    (tmp_path / "empty.jsonl").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        select_samples(tmp_path / "empty.jsonl", 5)
    (tmp_path / "broken_start.jsonl").write_text('oops\n{"prompt": "a"}\n', encoding="utf-8")
    assert str(select_samples(tmp_path / "broken_start.jsonl", 5).malformed[0]) == (
        "broken_start.jsonl:1: invalid JSON: Expecting value (column 1)")  # a .jsonl: line 1 bad
    (tmp_path / "data.parquet").write_bytes(b"PAR1\x00\x00")
    with pytest.raises(DataError, match="data.parquet: unsupported file"):
        select_samples(tmp_path / "data.parquet", 5)
    with pytest.raises(DataError, match="cannot read"):
        select_samples(tmp_path, 5)  # a directory


def test_gzipped_jsonl_and_json_array_are_detected_by_content(tmp_path: Path) -> None:
    records = numbered(20)
    jsonl = tmp_path / "train.jsonl.gz"
    jsonl.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    array = tmp_path / "train.data"  # the name says nothing; the content does
    array.write_bytes(gzip.compress(json.dumps(records, indent=2).encode()))
    expected = select_samples(records, 5, seed=3)
    for path in (jsonl, array):
        selection = select_samples(path, 5, seed=3)
        assert [s.prompt_id for s in selection.samples] == [
            s.prompt_id for s in expected.samples]
        assert selection.source_id == path.name


def test_json_array_reports_element_lines_and_stops_at_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(
        '[\n  {"prompt": "a"},\n  "just text",\n  {"prompt": "b"},\n  {"prompt": tru}\n]\n',
        encoding="utf-8",
    )
    selection = select_samples(path, None)
    assert [s.prompt for s in selection.samples] == ["a", "b"]
    assert [(p.line, p.index) for p in selection.malformed] == [(3, 1), (5, 3)]
    assert selection.malformed[0].reason == "element 1 is not a JSON object (got string)"
    # line 5 is '  {"prompt": tru}': 2 spaces + '{"prompt": ' (11 chars) puts "tru" at column 14
    assert "Expecting value (column 14)" in selection.malformed[1].reason


def test_json_array_streams_a_multi_megabyte_file_in_bounded_memory(tmp_path: Path) -> None:
    records = [{"prompt": f"q{i} " + "x" * 200, "completion": f"a{i}"} for i in range(20_000)]
    path = tmp_path / "big.json"
    # No newlines at all: one 4.5 MB line, so elements straddle every chunk boundary.
    path.write_text(json.dumps(records), encoding="utf-8")
    size = path.stat().st_size
    assert size > 4_000_000
    tracemalloc.start()
    try:
        selection = select_samples(path, 10, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = select_samples(records, 10, seed=1)
    assert [s.source_index for s in selection.samples] == [
        s.source_index for s in expected.samples]
    assert [s.prompt for s in selection.samples] == [
        records[s.source_index]["prompt"] for s in selection.samples]
    assert peak < size / 8, f"peak {peak} bytes for a {size}-byte file"


def test_json_array_element_larger_than_a_chunk_is_decoded_whole(tmp_path: Path) -> None:
    records = [{"prompt": "small"}, {"prompt": "y" * 1_000_000, "completion": 12345}, {"prompt": 7}]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    selection = select_samples(path, None)
    assert [len(s.prompt) for s in selection.samples] == [5, 1_000_000, 1]
    assert selection.samples[1].ground_truth == "12345"  # a number cut at a chunk edge reads whole


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8])
def test_json_array_decodes_identically_whatever_the_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    text = ('\ufeff[ {"a": 12345} ,{"b": -0.5e-3},\r\n {"c": "x\\"y\\u00e9"},'
            '{"d": [true, false, null]}, {"e": "é😀"}, 67890 ]\n')
    path = tmp_path / "tiny_chunks.json"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(readers, "_CHUNK_CHARS", chunk)
    entries = list(open_records(path).entries)
    records = [e.record for e in entries if isinstance(e, SourceRecord)]
    assert records == json.loads(text.lstrip("\ufeff"))[:5]
    # the number at the end is read whole (a cut "678" + "90" would be a syntax error)
    assert [e.reason for e in entries if isinstance(e, LineProblem)] == [
        "element 5 is not a JSON object (got number)"]


def test_same_seed_gives_same_samples_from_file_list_iterable_and_dataset(
    tmp_path: Path,
) -> None:
    datasets = pytest.importorskip("datasets")
    records = numbered(200) + [CHAT]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    array = tmp_path / "train.json"
    array.write_text(json.dumps(records), encoding="utf-8")
    sources = {
        "jsonl": path,
        "array": array,
        "list": records,
        "iterable": (r for r in records),
        "dataset": datasets.Dataset.from_list(records),
    }
    picked = {
        name: [(s.source_index, s.prompt_id, s.ground_truth)
               for s in select_samples(src, 12, seed=7).samples]
        for name, src in sources.items()
    }
    assert len(picked["list"]) == 12
    assert all(choice == picked["list"] for choice in picked.values()), picked
    assert [s.source_index for s in select_samples(records, 12, seed=8).samples] != [
        i for i, _, _ in picked["list"]]


def test_dataset_source_is_recorded_as_dataset_and_reads_chat_rows() -> None:
    datasets = pytest.importorskip("datasets")
    rows = [
        {"messages": [{"role": "user", "content": "hi", "name": "bob"},
                      {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "x"}]},
    ]
    dataset = datasets.Dataset.from_list(rows)
    # Arrow gives every message every struct field, filling the missing "name" with None ...
    assert dataset[1]["messages"][0]["name"] is None
    selection = select_samples(dataset, None)
    assert selection.source_id == "dataset"
    assert [s.ground_truth for s in selection.samples] == ["yo", None]
    # ... which must not change the prompt identity of the rows.
    assert [s.prompt_id for s in selection.samples] == [
        extract_sample(r, i).prompt_id for i, r in enumerate(rows)]
    assert selection.samples[1].messages == [{"role": "user", "content": "x"}]


def test_selection_is_ordered_by_source_index_and_n_none_keeps_all() -> None:
    records = numbered(50)
    chosen = select_samples(records, 10, seed=1).samples
    assert [s.source_index for s in chosen] == sorted(s.source_index for s in chosen)
    assert len(select_samples(records, None).samples) == 50
    assert len(select_samples(records, 500).samples) == 50  # fewer records than asked


def test_selection_does_not_touch_the_global_random_state() -> None:
    random.seed(1234)
    before = random.getstate()
    select_samples(numbered(100), 5, seed=99)
    assert random.getstate() == before


def test_in_memory_non_objects_are_reported_by_index() -> None:
    selection = select_samples([{"prompt": "a"}, "oops", None], None)
    assert [str(p) for p in selection.malformed] == [
        "list[1]: not a JSON object (got string)", "list[2]: not a JSON object (got null)"]
    assert isinstance(selection.malformed[0], LineProblem)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        select_samples(numbered(3), 0)
    with pytest.raises(TypeError, match="got dict"):
        open_records({"prompt": "a"})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="list: no records"):
        select_samples([], 3)
