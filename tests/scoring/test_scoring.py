"""Metrics against hand-computed values, and the scorer registry (decorator and entry points)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from predwatch.errors import ConfigError
from predwatch.records import CORE_METRICS
from predwatch.scoring import (
    DEFAULT_METRICS,
    available_scorers,
    get_scorer,
    registry,
    score_prediction,
    scorer,
)
from predwatch.scoring.registry import SCORER_GROUP, SCORERS, Registry


def score(metric: str, prediction: str, truth: str) -> float | None:
    return score_prediction(prediction, truth, [metric])[metric]


# --- the original four ---------------------------------------------------------------------


def test_exact_match_ignores_surrounding_space_and_case() -> None:
    assert score("exact_match", "  Paris \n", "paris") == 1.0
    assert score("exact_match", "Paris.", "paris") == 0.0


def test_char_error_rate_is_levenshtein_over_truth_length() -> None:
    # kitten -> sitting: k->s, e->i, insert g = 3 edits; len("sitting") = 7
    assert score("char_error_rate", "kitten", "sitting") == pytest.approx(3 / 7)
    # case and outer space do not count: "  KITTEN " -> "kitten"
    assert score("char_error_rate", "  KITTEN ", "sitting") == pytest.approx(3 / 7)
    assert score("char_error_rate", "same", "same") == 0.0


def test_char_error_rate_is_capped_at_one() -> None:
    # distance("a much longer answer", "no") = 18 or more; 18 / 2 = 9 -> capped at 1.0
    assert score("char_error_rate", "a much longer answer", "no") == 1.0
    # empty truth: distance 3 / max(0, 1) = 3 -> 1.0; both empty: 0 / 1 = 0.0
    assert score("char_error_rate", "abc", "") == 1.0
    assert score("char_error_rate", "", "") == 0.0


def test_length_ratio_is_prediction_length_over_truth_length() -> None:
    assert score("length_ratio", "  ABCD ", "ab") == 2.0  # 4 / 2 after stripping
    assert score("length_ratio", "ab", "abcd") == 0.5  # 2 / 4
    assert score("length_ratio", "abc", "") == 3.0  # 3 / max(0, 1)


def test_word_overlap_is_share_of_distinct_prediction_words_in_truth() -> None:
    # distinct prediction words {the, cat, dog}; only "cat" is in the truth -> 1/3
    assert score("word_overlap", "The cat the dog", "a cat sat") == pytest.approx(1 / 3)
    assert score("word_overlap", "   ", "anything") == 0.0  # no words
    assert score("word_overlap", "cat cat", "cat") == 1.0  # {cat} -> 1/1


# --- token F1 and ROUGE-L ------------------------------------------------------------------


def test_token_f1_is_bag_of_tokens_f1() -> None:
    # pred tokens: the cat sat on the mat (6); truth: the cat is on a mat (6)
    # common bag: the(min 2,1 = 1) cat on mat = 4 -> P = R = 4/6 -> F1 = 4/6
    assert score("token_f1", "The cat sat on the mat.", "the cat is on a mat") == pytest.approx(
        4 / 6)
    # punctuation splits tokens: "well-known" -> well, known
    assert score("token_f1", "well-known", "Well known") == 1.0
    assert score("token_f1", "dog", "cat") == 0.0


def test_rouge_l_uses_the_longest_common_subsequence() -> None:
    # same bag, different order: token F1 is 1.0 but the LCS of
    # [mat the on cat] and [the cat on mat] has length 2 -> P = R = 2/4 -> F = 0.5
    assert score("token_f1", "mat the on cat", "the cat on mat") == 1.0
    assert score("rouge_l", "mat the on cat", "the cat on mat") == pytest.approx(0.5)
    # LCS(a b c d, a c) = 2 -> P = 2/4, R = 2/2 -> F = 2 * 0.5 * 1 / 1.5 = 2/3
    assert score("rouge_l", "a b c d", "a c") == pytest.approx(2 / 3)


def test_token_metrics_on_texts_without_tokens() -> None:
    for metric in ("token_f1", "rouge_l"):
        assert score(metric, "...", "!!!") == 1.0  # neither has a token
        assert score(metric, "word", "...") == 0.0  # only one has


# --- score_prediction ----------------------------------------------------------------------


def test_every_metric_is_none_without_ground_truth() -> None:
    assert score_prediction("anything", None) == {name: None for name in DEFAULT_METRICS}


def test_default_metrics_are_the_core_four_plus_token_f1_and_rouge_l() -> None:
    scores = score_prediction("Paris", "paris")
    assert list(scores) == list(DEFAULT_METRICS)
    assert set(CORE_METRICS) <= set(scores)
    assert scores == {"exact_match": 1.0, "char_error_rate": 0.0, "length_ratio": 1.0,
                      "word_overlap": 1.0, "token_f1": 1.0, "rouge_l": 1.0}


def test_unknown_metric_raises_config_error_listing_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        score_prediction("a", "b", ["exact_match", "bleu", "meteor"])
    assert "unknown metrics 'bleu', 'meteor'" in info.value.message
    assert "available: char_error_rate, exact_match" in info.value.message
    assert [d["reason"] for d in info.value.detail] == ["unknown: bleu", "unknown: meteor"]


# --- registry ------------------------------------------------------------------------------


def test_a_decorated_scorer_is_available_by_name() -> None:
    @scorer("test_first_char_match")
    def first_char(prediction: str, ground_truth: str) -> float:
        return float(prediction[:1] == ground_truth[:1])

    try:
        assert "test_first_char_match" in available_scorers()
        assert get_scorer("test_first_char_match") is first_char
        assert score_prediction("abc", "axe", ["test_first_char_match"]) == {
            "test_first_char_match": 1.0}
    finally:
        SCORERS.unregister("test_first_char_match")


def test_registering_a_different_scorer_under_a_taken_name_needs_replace() -> None:
    with pytest.raises(ValueError, match="'exact_match' is already registered"):
        scorer("exact_match")(lambda prediction, ground_truth: 0.0)


def length_difference(prediction: str, ground_truth: str) -> float:
    """A third-party metric, loaded below through a real entry point."""
    return float(abs(len(prediction) - len(ground_truth)))


@pytest.fixture
def plugin_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The global scorer registry seeing only the entry points a test appends."""
    points: list[EntryPoint] = []
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [p for p in points if p.group == group])
    SCORERS.refresh()
    yield points
    for point in points:
        SCORERS.unregister(point.name)
    SCORERS.refresh()


def test_entry_point_scorer_is_loaded_on_first_lookup(
    plugin_registry: list[EntryPoint], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "predwatch_test_plugin_metrics.py"
    plugin.write_text("def shout(prediction, ground_truth):\n    return 42.0\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_registry.append(EntryPoint("shout", "predwatch_test_plugin_metrics:shout",
                                      SCORER_GROUP))
    plugin_registry.append(EntryPoint("len_diff", f"{__name__}:length_difference", SCORER_GROUP))

    assert {"shout", "len_diff"} <= set(available_scorers())  # listed ...
    assert "predwatch_test_plugin_metrics" not in sys.modules  # ... but not imported yet
    assert score_prediction("abcd", "ab", ["shout", "len_diff"]) == {
        "shout": 42.0, "len_diff": 2.0}
    assert "predwatch_test_plugin_metrics" in sys.modules
    monkeypatch.delitem(sys.modules, "predwatch_test_plugin_metrics")


def test_broken_entry_point_raises_config_error_naming_it(
    plugin_registry: list[EntryPoint],
) -> None:
    plugin_registry.append(EntryPoint("broken", "predwatch_no_such_module:fn", SCORER_GROUP))
    with pytest.raises(ConfigError, match="metric 'broken' could not be loaded from "
                                          "'predwatch_no_such_module:fn'"):
        get_scorer("broken")


def test_a_private_registry_discovers_through_its_own_source() -> None:
    point = EntryPoint("len_diff", f"{__name__}:length_difference", "custom.group")
    private: Registry[object] = Registry("thing", "custom.group", discover=lambda: [point])
    assert private.names() == ["len_diff"]
    assert private.get("len_diff") is length_difference
    with pytest.raises(ConfigError, match="unknown thing 'nope'; available: len_diff"):
        private.get("nope")


def test_every_built_in_metric_carries_how_it_is_shown() -> None:
    from predwatch.scoring import metrics

    shown = {m.name: m for m in metrics()}
    assert list(shown)[:6] == ["exact_match", "char_error_rate", "length_ratio", "word_overlap",
                               "token_f1", "rouge_l"]
    cer = shown["char_error_rate"]
    assert (cer.label, cer.higher_is_better, cer.range, cer.featured) == ("CER", False,
                                                                          (0.0, 1.0), True)
    assert shown["exact_match"].format == "pct"
    assert shown["length_ratio"].higher_is_better is None and shown["length_ratio"].range is None
    assert not shown["rouge_l"].featured  # recorded, sortable, but not a card or chart


def test_a_metric_registered_without_metadata_gets_plain_defaults() -> None:
    from predwatch.scoring import metric_info

    SCORERS.register("plain_metric", lambda p, t: 0.5)
    try:
        info = metric_info("plain_metric")
        assert (info.label, info.title, info.higher_is_better, info.range) == (
            "plain_metric", "plain metric", None, None)
    finally:
        SCORERS.unregister("plain_metric")
