"""``num_samples``: several answers per prompt per point from a real tiny model, each drawn from
its own seed; pass@k and disagreement in the point's metrics, checked against values computed
by hand from the stored rows (SQLite and PostgreSQL); reproducible; one answer regenerated."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from predwatch.cli import main  # noqa: E402
from predwatch.config import Settings  # noqa: E402
from predwatch.generation.base import sample_seed  # noqa: E402
from predwatch.generation.hf import HFGenerator  # noqa: E402
from predwatch.recording.recorder import Recorder  # noqa: E402
from predwatch.records import Prediction, Sample, prompt_identity  # noqa: E402
from predwatch.repro.regenerate import regenerate  # noqa: E402
from predwatch.server import create_app  # noqa: E402
from predwatch.storage import open_store  # noqa: E402

N = 4
CONFIG: dict[str, Any] = {
    "sample_count": 3, "num_samples": N, "do_sample": True, "max_new_tokens": 2, "top_k": 3,
    "seed": 7, "batch_size": 8,
    "validators": [{"kind": "regex", "pattern": "[aeiou]", "mode": "search"}],
}
SAMPLES = [{"prompt": "Say a word about cats:"}, {"prompt": "Say a word about dogs:"},
           {"prompt": "Name the weather:", "completion": "rain"}]


def record(db: str, tmp: Path, tiny_model: Any, *, checkpoint: str | None = None,
           **overrides: Any) -> str:
    model, tokenizer = tiny_model
    recorder = Recorder({**CONFIG, **overrides}, samples=SAMPLES, db=db,
                        spool_dir=str(tmp / f"spool-{overrides.get('seed', 7)}"))
    summary = recorder.record(model, tokenizer, step=10, epoch=1.0, checkpoint=checkpoint)
    assert summary is not None and summary.sample_count == 3 * N
    assert recorder.close() == 0
    return recorder.run.id


def by_prompt(rows: list[Prediction]) -> dict[int, list[Prediction]]:
    groups: dict[int, list[Prediction]] = {}
    for row in rows:
        groups.setdefault(row.sample_index, []).append(row)
    return {i: sorted(g, key=lambda r: r.sample_number) for i, g in sorted(groups.items())}


def passed(row: Prediction) -> bool:
    """The documented rule, by hand: generated, validators passed, expected answer matched."""
    if row.error is not None or row.validation_pass is not True:
        return False
    return row.ground_truth is None or row.prediction.strip().lower() == row.ground_truth.lower()


def by_hand(rows: list[Prediction]) -> dict[str, float]:
    c = sum(passed(r) for r in rows)
    counts = Counter(r.prediction.strip() for r in rows)
    return {
        "pass@1": c / 4,
        "pass@2": 1 - math.comb(4 - c, 2) / math.comb(4, 2),
        "pass@4": 1.0 if c else 0.0,
        "disagreement": 1 - sum(math.comb(k, 2) for k in counts.values()) / math.comb(4, 2),
    }


def test_each_prompt_gets_four_answers_and_the_point_its_pass_at_k(
    db_url: str, tmp_path: Path, tiny_model: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="predwatch"):
        run_id = record(db_url, tmp_path, tiny_model)
    assert "recording 3 prompts x 4 answers (12 answers) per evaluation point" in caplog.text
    with open_store(db_url) as store:
        rows = store.point_predictions(run_id, 10)
        trend = store.trends(run_id)[0]
        groups = by_prompt(rows)
        assert len(rows) == 3 * N and len(groups) == 3
        expected: dict[str, list[float]] = {}
        for group in groups.values():
            assert [r.sample_number for r in group] == [0, 1, 2, 3]
            assert len({r.prompt_id for r in group}) == 1
            assert all(r.generation_params["num_samples"] == N for r in group)
            hand = by_hand(group)
            for row in group:  # the prompt's values on each of its answers
                assert {k: row.metrics[k] for k in hand} == pytest.approx(hand)
                assert "pass@3" not in row.metrics and "pass@8" not in row.metrics
            for name, value in hand.items():
                expected.setdefault(name, []).append(value)
        # not a degenerate draw: answers differ within a prompt, verdicts are mixed
        assert any(len({r.prediction for r in g}) > 1 for g in groups.values())
        assert 0 < sum(passed(r) for r in rows) < len(rows)
        for name, values in expected.items():  # the point's stored mean = mean over prompts
            assert trend.averages[name] == pytest.approx(sum(values) / len(values))
        [point] = store.eval_points(run_id)
        assert point.card["num_samples"] == N and point.card["answer_count"] == 3 * N

        client = TestClient(create_app(store, Settings()))
        page = client.get(f"/api/runs/{run_id}/predictions", params={"limit": 50}).json()
        assert sorted((p["sample_index"], p["sample_number"]) for p in page["predictions"]) == \
            sorted((r.sample_index, r.sample_number) for r in rows)
        original = client.get(f"/api/training/predictions/{run_id}").json()
        numbers = sorted(p["sample_number"] for p in original["predictions"])
        assert numbers == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
        overview = client.get(f"/api/runs/{run_id}/overview").json()
        shown = {m["name"]: m for m in overview["metrics"]}
        assert [n for n in shown if n.startswith("pass@")] == ["pass@1", "pass@2", "pass@4"]
        assert shown["pass@4"]["format"] == "pct" and shown["pass@4"]["higher_is_better"]
        assert shown["disagreement"]["higher_is_better"] is None
        assert overview["trends"][0]["averages"]["pass@2"] == pytest.approx(
            sum(expected["pass@2"]) / 3)


def test_the_same_seed_draws_the_same_answers_and_another_seed_others(
    sqlite_url: str, tmp_path: Path, tiny_model: Any,
) -> None:
    first = record(sqlite_url, tmp_path, tiny_model)
    second = record(sqlite_url, tmp_path, tiny_model)
    other = record(sqlite_url, tmp_path, tiny_model, seed=8)
    with open_store(sqlite_url) as store:
        def answers(run: str) -> list[tuple[int, int, str]]:
            return [(r.sample_index, r.sample_number, r.prediction)
                    for r in store.point_predictions(run, 10)]

        assert answers(first) == answers(second)
        assert answers(first) != answers(other)


def test_an_answer_does_not_depend_on_its_batch(tiny_model: Any) -> None:
    model, tokenizer = tiny_model
    generator = HFGenerator(model, tokenizer)
    params = {"do_sample": True, "top_k": 5, "temperature": 0.8, "max_new_tokens": 6,
              "seed": 1, "batch_size": 16}
    samples = [Sample(prompt_id=prompt_identity(p), source_index=i, prompt=p,
                      seed=sample_seed(1, prompt_identity(p), k))
               for i, p in enumerate(["one two three", "a", "the weather is"]) for k in range(3)]
    together = [g.text for g in generator.generate(samples, params)]
    small_batches = [g.text for g in generator.generate(samples, {**params, "batch_size": 2})]
    alone = [generator.generate([s], params)[0].text for s in samples]
    assert together == small_batches == alone
    assert len(set(together)) > 3  # the seeds draw different answers


def test_a_third_answer_is_regenerated_alone_from_its_checkpoint(
    sqlite_url: str, tmp_path: Path, tiny_model: Any,
) -> None:
    model, tokenizer = tiny_model
    checkpoint = tmp_path / "checkpoint-10"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    run_id = record(sqlite_url, tmp_path, tiny_model, checkpoint=str(checkpoint))
    with open_store(sqlite_url) as store:
        groups = by_prompt(store.point_predictions(run_id, 10))
        # a prompt whose third answer is not its first: the right one must come back
        target = next(g[2] for g in groups.values() if g[2].prediction != g[0].prediction)
        alone = regenerate(store, run_id, 10, target.prompt_id, checkpoint, sample_number=2,
                           whole_point=False)
        assert alone.matches, alone.diff
        assert alone.regenerated == target.prediction and alone.prompt_count == 1
        whole = regenerate(store, run_id, 10, target.prompt_id, checkpoint, sample_number=2)
        assert whole.matches and whole.prompt_count == 3 * N
    result = CliRunner().invoke(main, [
        "regenerate", "--run", run_id, "--step", "10", "--prompt-id", target.prompt_id,
        "--model", str(checkpoint), "--single", "--sample-number", "2", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output and repr(target.prediction) in result.output
