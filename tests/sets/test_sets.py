"""Prediction sets: reading items, versions and ids in the database (both backends), export,
diff, the samples a run answers, the API routes and the ``predwatch sets`` commands."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from predwatch.cli import main
from predwatch.config import PredictionsConfig, Settings
from predwatch.errors import DataError, NotFound
from predwatch.recording.set_source import samples_for_config
from predwatch.records import Run, prompt_identity
from predwatch.server.auth import issue_run_token
from predwatch.sets import diff_items, export_file, read_items
from predwatch.sets.model import content_hash, name_for_file
from predwatch.sets.stored import diff_versions, import_set

ITEMS: list[dict[str, Any]] = [
    {"prompt": "2+2?", "completion": "4", "tags": "math; easy"},
    {"id": "capital", "question": "Capital of France?", "answer": "Paris",
     "validators": [{"kind": "regex", "pattern": "^[A-Z]", "name": "capitalised"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}]},
    {"instruction": "Reverse", "input": "abc", "output": "cba", "tags": ["text"]},
]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- reading items --------------------------------------------------------------------------


def test_items_are_read_from_every_dataset_format_with_ids_validators_and_tags(
    tmp_path: Path,
) -> None:
    items = read_items(write_jsonl(tmp_path / "golden.jsonl", ITEMS))
    math, capital, chat, reverse = items
    assert (math.prompt, math.ground_truth, math.tags) == ("2+2?", "4", ["easy", "math"])
    assert math.custom_id is None and len(math.item_id) == 16
    assert math.prompt_id == prompt_identity("2+2?")  # the same id a dataset sample gets
    assert (capital.item_id, capital.prompt_id, capital.custom_id) == ("capital",) * 3
    assert capital.validators == [{"kind": "regex", "pattern": "^[A-Z]", "name": "capitalised"}]
    assert chat.messages is not None and chat.messages[-1]["content"] == "hi"
    assert (chat.prompt, chat.ground_truth) == ("hi", "hello")
    assert (reverse.prompt, reverse.ground_truth) == ("Reverse\n\nabc", "cba")
    # the same items from a JSON array, a gzip file or a list have the same ids
    (tmp_path / "golden.json").write_text(json.dumps(ITEMS), encoding="utf-8")
    with gzip.open(tmp_path / "golden.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in ITEMS))
    for source in (tmp_path / "golden.json", tmp_path / "golden.jsonl.gz", ITEMS):
        assert read_items(source) == items


def test_items_are_read_from_a_dataset() -> None:
    from datasets import Dataset

    rows = [{"prompt": "a", "completion": "b", "tags": ["x"]}, {"prompt": "c", "completion": None,
                                                                 "tags": None}]
    items = read_items(Dataset.from_list(rows))
    assert [(i.prompt, i.ground_truth, i.tags) for i in items] == [("a", "b", ["x"]),
                                                                  ("c", None, [])]


def test_dataset_rows_with_different_validator_kinds_read_as_their_own_specs() -> None:
    from datasets import Dataset

    # Arrow merges the specs into one struct: the regex spec would get "value": None
    rows = [{"prompt": "a", "validators": [{"kind": "regex", "pattern": "^a"}]},
            {"prompt": "b", "validators": [{"kind": "contains", "value": "b"}]}]
    items = read_items(Dataset.from_list(rows))
    assert [i.validators for i in items] == [[{"kind": "regex", "pattern": "^a"}],
                                            [{"kind": "contains", "value": "b"}]]
    assert items == read_items(rows)  # the same items, ids included, as from the list


def test_a_csv_set_reads_its_columns_and_names_the_line_of_a_bad_row(tmp_path: Path) -> None:
    good = tmp_path / "golden.csv"
    good.write_text(
        'id,prompt,answer,tags,validators\n'
        'q1,"multi\nline prompt",42,"a, b",\n'
        ',2+2?,4,,"[{""kind"": ""equals"", ""value"": ""4""}]"\n',
        encoding="utf-8",
    )
    first, second = read_items(good)
    assert (first.item_id, first.prompt, first.ground_truth, first.tags) == (
        "q1", "multi\nline prompt", "42", ["a", "b"])
    assert second.validators == [{"kind": "equals", "value": "4"}]

    bad = tmp_path / "bad.csv"
    bad.write_text('prompt,validators\nok,\nbroken,"[{""kind"": "\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"(?s)bad.csv: 1 problem.*line 3: column 'validators': "
                                        r"not valid JSON"):
        read_items(bad)
    (tmp_path / "nocol.csv").write_text("question\nx\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nocol.csv:1: the header has no 'prompt'"):
        read_items(tmp_path / "nocol.csv")


def test_every_problem_in_a_set_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "fine"}),
        "{not json",
        json.dumps({"label": 1}),
        json.dumps({"prompt": "x", "validators": [{"kind": "regex"}]}),
        json.dumps({"prompt": "y", "validators": [{"kind": "python", "callable": "os:system"}]}),
        json.dumps({"prompt": "fine", "completion": "other truth"}),
        json.dumps({"prompt": "z", "tags": 3}),
    ]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as raised:
        read_items(path)
    message = raised.value.message
    assert message.startswith("bad.jsonl: 6 problems")
    assert "line 2: invalid JSON" in message
    assert "line 3: no known format (keys: label)" in message
    assert "line 4: field 'validators': validator 0 (regex)" in message
    assert "line 5: field 'validators': validator 0 is a 'python' validator" in message
    assert "line 6: same prompt as line 1" in message
    assert "line 7: field 'tags'" in message


def test_a_schema_path_next_to_the_set_file_is_stored_inline(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text('{"type": "object"}', encoding="utf-8")
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p", "validators": {"kind": "json_schema", "schema_path": "schema.json"}}])
    (item,) = read_items(path)
    assert item.validators == [{"kind": "json_schema", "schema": {"type": "object"}}]
    with pytest.raises(DataError, match="'schema_path'; give the schema inline"):
        read_items([{"prompt": "p", "validators": {"kind": "json_schema",
                                                   "schema_path": "schema.json"}}])


# --- versions in the database -----------------------------------------------------------------


def test_versions_are_numbered_immutable_and_identified_by_content(store: Any, tmp_path: Path
                                                                   ) -> None:
    v1, created = import_set(store, write_jsonl(tmp_path / "golden.jsonl", ITEMS))
    assert (v1.name, v1.version, v1.item_count, created) == ("golden", 1, 4, True)
    # the same content again, in another order: the same version, nothing written
    again, created = store.create_set_version("golden", list(reversed(read_items(ITEMS))))
    assert (again.version, again.content_hash, created) == (1, v1.content_hash, False)

    changed = [*ITEMS[:3], {"prompt": "new prompt", "completion": "x"}]
    changed[0] = {**ITEMS[0], "completion": "four"}
    v2, created = store.create_set_version("golden", read_items(changed), description="fix")
    assert (v2.version, created, v2.description) == (2, True, "fix")

    _, items1 = store.list_set_items("golden", 1)
    latest, items2 = store.list_set_items("golden")
    assert latest.version == 2
    # unchanged items keep their ids across versions, and so does one whose answer changed
    assert [i.item_id for i in items1[1:3]] == [i.item_id for i in items2[1:3]]
    assert items1[0].item_id == items2[0].item_id  # its id follows its prompt
    assert items1[0].prompt_id == items2[0].prompt_id
    _, page = store.list_set_items("golden", 2, limit=2, offset=1)
    assert [i.item_id for i in page] == [i.item_id for i in items2[1:3]]

    found = store.get_set("golden")
    assert [v.version for v in found.versions] == [1, 2] and found.latest_version == 2
    assert [(s.name, s.latest_version, s.item_count) for s in store.list_sets()] == [
        ("golden", 2, 4)]
    with pytest.raises(NotFound, match="has no version 3 \\(versions 1 to 2\\)"):
        store.list_set_items("golden", 3)
    with pytest.raises(NotFound, match="'nope' not found"):
        store.get_set("nope")

    diff = diff_versions(store, "golden", 1, 2)
    assert [i.prompt for i in diff.added] == ["new prompt"]
    assert [i.prompt for i in diff.removed] == ["Reverse\n\nabc"]
    assert [(c.before.prompt, c.fields) for c in diff.changed] == [("2+2?", ["ground_truth"])]
    assert diff.unchanged == 2


def test_editing_an_items_answer_or_tags_keeps_its_id_and_shows_as_changed(
    store: Any, tmp_path: Path,
) -> None:
    v1 = [{"prompt": "2+2?", "completion": "4", "tags": "math; easy"},
          {"messages": [{"role": "user", "content": "hi"}], "ground_truth": "hello"},
          {"prompt": "kept", "completion": "k"}]
    v2 = [{"prompt": "2+2?", "completion": "four", "tags": "math; words"},
          {"messages": [{"role": "user", "content": "hi"}], "ground_truth": "hello",
           "tags": ["greeting"]},
          {"prompt": "kept", "completion": "k"}]
    first, second = read_items(v1), read_items(v2)
    # Measured before: every edited item got a new id (a hash of its whole content).
    assert [i.item_id for i in first] == [i.item_id for i in second]
    assert [i.item_id for i in first] == [i.prompt_id[:16] for i in first]
    store.create_set_version("edits", first)
    store.create_set_version("edits", second)
    diff = diff_versions(store, "edits", 1, 2)
    assert not diff.added and not diff.removed and diff.unchanged == 1
    assert [(c.before.item_id == c.after.item_id, c.fields, c.tags_added, c.tags_removed)
            for c in diff.changed] == [
        (True, ["ground_truth", "tags"], ["words"], ["easy"]),
        (True, ["tags"], ["greeting"], []),
    ]
    from predwatch.storage import open_store

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    with open_store(db) as other:
        other.create_set_version("edits", first)
        other.create_set_version("edits", second)
    shown = CliRunner().invoke(main, ["sets", "diff", "edits", "1", "2", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "0 added, 0 removed, 2 changed, 1 unchanged" in shown.output
    assert f"~ {first[0].item_id}  (ground_truth, tags +words -easy)" in shown.output
    assert f"~ {first[1].item_id}  (tags +greeting)" in shown.output


def test_versions_stored_with_content_hashed_ids_keep_their_hash_and_diff_as_unchanged(
) -> None:
    """Item ids used to hash the whole item; a version stored then keeps its content hash
    (re-importing the same file finds it), and diffs against a new one pair by prompt."""
    import hashlib

    from predwatch.records import canonical_json

    items = read_items(ITEMS)

    def old_id(item: Any) -> str:
        return item.custom_id or hashlib.sha256(
            canonical_json(item.content()).encode("utf-8")).hexdigest()[:16]

    stored = [i.model_copy(update={"item_id": old_id(i)}) for i in items]
    old_hash = hashlib.sha256(canonical_json([
        {"id": i.custom_id, **i.content()} for i in sorted(stored, key=lambda i: i.item_id)
    ]).encode("utf-8")).hexdigest()
    assert content_hash(items) == content_hash(stored) == old_hash
    edited = read_items([{**ITEMS[0], "completion": "four"}, *ITEMS[1:]])
    diff = diff_items("s", 1, stored, 2, edited)
    assert not diff.added and not diff.removed and diff.unchanged == 3
    assert [(c.before.prompt, c.fields) for c in diff.changed] == [("2+2?", ["ground_truth"])]


def test_an_item_with_its_own_id_is_changed_in_place_in_a_diff(store: Any) -> None:
    store.create_set_version("ids", read_items([{"id": "a", "prompt": "p", "completion": "1"}]))
    store.create_set_version("ids", read_items([{"id": "a", "prompt": "p2", "completion": "1",
                                              "tags": ["t"]}]))
    diff = diff_versions(store, "ids", 1)
    assert not diff.added and not diff.removed
    assert [(c.after.item_id, c.fields) for c in diff.changed] == [("a", ["prompt", "tags"])]


def test_an_item_that_gains_or_changes_its_id_is_changed_not_removed_and_added() -> None:
    v1 = read_items([{"prompt": "p", "completion": "1"},
                     {"messages": [{"role": "user", "content": "chat"}], "ground_truth": "c"},
                     {"prompt": "gone"}])
    v2 = read_items([{"id": "p-id", "prompt": "p", "completion": "1"},
                     {"id": "chat-id", "messages": [{"role": "user", "content": "chat"}],
                      "ground_truth": "c2"},
                     {"prompt": "new"}])
    v3 = read_items([{"id": "renamed", "prompt": "p", "completion": "1"}])
    diff = diff_items("s", 1, v1, 2, v2)
    assert [(c.before.item_id, c.after.item_id, c.fields) for c in diff.changed] == [
        (v1[0].item_id, "p-id", ["id"]), (v1[1].item_id, "chat-id", ["id", "ground_truth"])]
    assert [i.prompt for i in diff.removed] == ["gone"]
    assert [i.prompt for i in diff.added] == ["new"]
    renamed = diff_items("s", 2, v2[:1], 3, v3)
    assert [c.fields for c in renamed.changed] == [["id"]]
    assert not renamed.added and not renamed.removed


def test_items_sharing_a_prompt_are_each_matched_in_a_diff() -> None:
    v1 = read_items([{"id": "a", "prompt": "p", "completion": "1"},
                     {"id": "b", "prompt": "p", "completion": "2"}])
    v2 = read_items([{"id": "c", "prompt": "p", "completion": "1"}])
    diff = diff_items("s", 1, v1, 2, v2)
    assert [(c.before.item_id, c.after.item_id) for c in diff.changed] == [("a", "c")]
    assert [i.item_id for i in diff.removed] == ["b"]  # not lost


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv.gz"])
def test_an_export_imports_back_to_the_same_version(
    sqlite_url: str, tmp_path: Path, suffix: str
) -> None:
    from predwatch.storage import open_store

    # a chat whose prompt ends with an assistant turn must not lose that turn
    prefilled = {"prompt": [{"role": "user", "content": "Say hi"},
                            {"role": "assistant", "content": "Hi"}], "completion": "!"}
    with open_store(sqlite_url) as store:
        store.create_set_version("golden", read_items([*ITEMS, prefilled]))
        _, items = store.list_set_items("golden")
        out = tmp_path / f"export{suffix}"
        assert export_file(items, out) == 5
        again, created = import_set(store, out, name="golden")
    assert (again.version, created) == (1, False)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_awkward_items_export_and_import_back_to_the_same_version_hash(
    tmp_path: Path, suffix: str
) -> None:
    records = [
        {"prompt": "draft?", "completion": "yes", "tags": ["[draft]"]},  # read as JSON if plain
        {"prompt": "bracket later", "completion": "x", "tags": ["a", "[b]"]},
        {"prompt": "empty truth", "ground_truth": ""},  # CSV cannot tell "" from no answer
        {"prompt": "long " + "x" * 200_000, "completion": "y"},  # over csv's 131072 limit
    ]
    items = read_items(records)
    assert items[2].ground_truth is None
    assert items[2] == read_items([{"prompt": "empty truth"}])[0]  # "" and none: one item
    out = tmp_path / f"export{suffix}"
    export_file(items, out)
    again = read_items(out)
    assert again == items
    assert content_hash(again) == content_hash(items)


# --- what a run answers -----------------------------------------------------------------------


def test_a_set_run_answers_every_item_or_a_seeded_subset(sqlite_url: str, tmp_path: Path) -> None:
    from predwatch.storage import open_store

    settings = Settings(database_url=sqlite_url)
    many = [{"prompt": f"q{i}", "completion": str(i)} for i in range(10)]
    with open_store(sqlite_url) as store:
        version, _ = store.create_set_version("golden", read_items(many))
    samples = samples_for_config(PredictionsConfig(source="set", set="golden"), settings=settings)
    assert len(samples) == 10
    first = samples[0]
    assert (first.sample_source, first.sample_source_id, first.set_id, first.set_version) == (
        "set", "golden", version.set_id, 1)
    assert first.item_id is not None and first.source_index == 0

    subset = PredictionsConfig(source="set", set="golden@1", sample_count=3, seed=7)
    chosen = samples_for_config(subset, settings=settings)
    assert len(chosen) == 3 and chosen == samples_for_config(subset, settings=settings)
    assert [s.source_index for s in chosen] == sorted(s.source_index for s in chosen)

    with pytest.raises(NotFound):
        samples_for_config(PredictionsConfig(source="set", set="golden@2"), settings=settings)


def test_a_set_file_is_imported_on_the_fly_as_a_set_named_after_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    from predwatch.storage import open_store

    path = write_jsonl(tmp_path / "my golden.jsonl", ITEMS)
    config = PredictionsConfig(source="set", samples_path=str(path))
    samples = samples_for_config(config, settings=Settings(database_url=sqlite_url))
    assert {s.sample_source_id for s in samples} == {"my-golden"}
    assert name_for_file("golden.v2.jsonl.gz") == "golden.v2"
    assert samples[1].validators[0]["kind"] == "regex" and samples[0].tags == ["easy", "math"]
    samples_for_config(config, settings=Settings(database_url=sqlite_url))  # unchanged file
    with open_store(sqlite_url) as store:
        assert [v.version for v in store.get_set("my-golden").versions] == [1]


def test_a_recorder_writing_to_a_server_reads_its_set_from_the_server(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from predwatch.client import ApiClient
    from predwatch.recording import set_source as set_samples
    from predwatch.server.app import create_app
    from predwatch.storage import open_store

    server = open_store(sqlite_url)
    version, _ = server.create_set_version("golden", read_items(
        [{"prompt": f"q{i}", "completion": str(i)} for i in range(5)]))
    app = create_app(server, Settings(auth="on"))
    monkeypatch.setattr(set_samples, "PAGE_SIZE", 2)  # three pages
    # the recorder's client, talking to the app in-process, with the run's write token
    server.create_run(Run(id="r"))
    token = issue_run_token(server, "r")
    monkeypatch.setattr(set_samples, "open_client", lambda s: ApiClient(
        "http://server", token=s.run_token, http=TestClient(app, base_url="http://server")))
    with server:
        settings = Settings(server_url="http://server", run_token=token,
                            database_url="sqlite:////nonexistent/x.db")
        samples = samples_for_config(PredictionsConfig(source="set", set="golden"),
                                     settings=settings)
        assert [s.prompt for s in samples] == [f"q{i}" for i in range(5)]
        assert {(s.set_id, s.set_version) for s in samples} == {(version.set_id, 1)}
        with pytest.raises(NotFound, match="'other' not found"):
            samples_for_config(PredictionsConfig(source="set", set="other"), settings=settings)
        # a file is read locally, not stored anywhere: item ids, no set id or version
        path = write_jsonl(tmp_path / "local.jsonl", ITEMS)
        with caplog.at_level("WARNING", logger="predwatch"):
            local = samples_for_config(PredictionsConfig(source="set", set=str(path)),
                                       settings=settings)
        assert [s.set_id for s in local] == [None] * 4 and local[1].item_id == "capital"
        assert "not stored on the server" in caplog.text


# --- API ------------------------------------------------------------------------------------


def test_api_lists_reads_creates_and_diffs_sets(store: Any) -> None:
    from fastapi.testclient import TestClient

    from predwatch.server.app import create_app

    client = TestClient(create_app(store, Settings()))
    created = client.post("/api/sets", json={"name": "g", "items": ITEMS, "description": "v1"})
    assert created.status_code == 201 and created.json()["version"]["version"] == 1
    same = client.post("/api/sets", json={"name": "g", "items": ITEMS[::-1]})
    assert same.status_code == 200 and same.json()["created"] is False
    client.post("/api/sets", json={"name": "g", "items": ITEMS[:2]})

    assert [s["latest_version"] for s in client.get("/api/sets").json()["sets"]] == [2]
    assert len(client.get("/api/sets/g").json()["set"]["versions"]) == 2
    page = client.get("/api/sets/g/versions/1", params={"limit": 3}).json()
    assert (len(page["items"]), page["total_count"], page["next_offset"]) == (3, 4, 3)
    assert client.get("/api/sets/g/versions/latest").json()["version"]["version"] == 2
    diff = client.get("/api/sets/g/diff", params={"a": 1, "b": 2}).json()
    assert (len(diff["removed"]), diff["unchanged"]) == (2, 2)

    assert client.get("/api/sets/nope").status_code == 404
    assert client.get("/api/sets/g/versions/9").status_code == 404
    bad = client.post("/api/sets", json={"name": "g", "items": [{"prompt": "ok"}, {"x": 1}]})
    assert bad.status_code == 422 and "item 1: no known format" in bad.json()["message"]
    assert client.post("/api/sets", json={"name": "a b", "items": ITEMS}).status_code == 422


def test_api_set_creation_needs_a_key_not_a_run_token(store: Any) -> None:
    from fastapi.testclient import TestClient

    from predwatch.records import Run
    from predwatch.server.app import create_app
    from predwatch.server.auth import create_api_key, issue_run_token

    store.create_run(Run(id="r1"))
    token = issue_run_token(store, "r1")
    _, key = create_api_key(store, "ada")
    client = TestClient(create_app(store, Settings(auth="on")))
    assert client.get("/api/sets").status_code == 401
    refused = client.post("/api/sets", json={"name": "g", "items": ITEMS},
                          headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    made = client.post("/api/sets", json={"name": "g", "items": ITEMS}, headers={"X-API-Key": key})
    assert made.status_code == 201 and made.json()["version"]["created_by"] == "ada"
    # a run token reads sets (a recorder fetches its set with it)
    read = client.get("/api/sets/g/versions/latest", headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 200 and len(read.json()["items"]) == 4


# --- CLI --------------------------------------------------------------------------------------


def test_cli_imports_lists_shows_exports_and_diffs(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    source = write_jsonl(tmp_path / "golden.jsonl", ITEMS)

    def run(*args: str) -> str:
        result = runner.invoke(main, [*args, "--db", db], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "golden@1: 4 items, created" in run("sets", "import", str(source))
    assert "unchanged" in run("sets", "import", str(source))
    write_jsonl(source, ITEMS[:3])
    assert "golden@2: 3 items, created" in run("sets", "import", str(source))
    assert "golden" in run("sets", "list")
    assert "capital" in run("sets", "show", "golden@1")
    exported = run("sets", "export", "golden@1")
    assert [json.loads(line) for line in exported.splitlines()][1]["id"] == "capital"
    assert "0 added, 1 removed, 0 changed, 3 unchanged" in run("sets", "diff", "golden", "1", "2")
    missing = runner.invoke(main, ["sets", "show", "nope", "--db", db])
    assert missing.exit_code == 1 and "prediction set 'nope' not found" in missing.output
