"""Word-level diffs of answers (timeline and compare pages)."""

from __future__ import annotations

from itertools import pairwise

from predwatch.analysis.textdiff import DiffPart, similarity, tokenize, word_diff


def old_and_new(parts: list[DiffPart]) -> tuple[str, str]:
    old = "".join(p.text for p in parts if p.op != "insert")
    new = "".join(p.text for p in parts if p.op != "delete")
    return old, new


def test_tokens_round_trip_and_split_punctuation_from_words() -> None:
    text = '{"name": "ada", "age": 36}\n  done.'
    assert "".join(tokenize(text)) == text
    assert tokenize('"age": 36}') == ['"', "age", '":', " ", "36", "}"]


def test_a_changed_value_is_the_only_change() -> None:
    parts = word_diff('{"name": "ada", "age": 36}', '{"name": "ada", "age": 41}')
    assert [p for p in parts if p.op != "equal"] == [
        DiffPart("delete", "36"), DiffPart("insert", "41")
    ]
    assert old_and_new(parts) == ('{"name": "ada", "age": 36}', '{"name": "ada", "age": 41}')


def test_both_texts_can_be_rebuilt_from_any_diff() -> None:
    pairs = [("", "new text"), ("old text", ""), ("a b c", "c b a"), ("same", "same"),
             ("<script>x</script>", "<b>x</b> more"), ("line one\nline two", "line two\nline 3")]
    for old, new in pairs:
        parts = word_diff(old, new)
        assert old_and_new(parts) == (old, new)
        assert all(p.text for p in parts)
        assert all(a.op != b.op for a, b in pairwise(parts))  # adjacent parts merged


def test_similarity_is_one_for_equal_texts_and_zero_for_disjoint_ones() -> None:
    assert similarity("a b", "a b") == 1.0 and similarity("", "") == 1.0
    assert similarity("alpha", "omega") == 0.0
    assert 0 < similarity("the cat sat", "the dog sat") < 1
