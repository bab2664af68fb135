"""Cost estimates: every figure below is worked out by hand in the comment next to it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from predwatch.cli import main
from predwatch.config import PredictionsConfig, Settings
from predwatch.errors import ConfigError
from predwatch.generation.fake import FakeGenerator
from predwatch.recording.estimate import estimate_cost, estimate_from_run
from predwatch.recording.recorder import Recorder
from predwatch.records import EvalPoint, Generation, Prediction, Run, Sample

CONFIG = PredictionsConfig(sample_count=8, max_new_tokens=64, step_interval=100)


def test_epoch_frequency_counts_one_point_per_epoch() -> None:
    e = estimate_cost(CONFIG, num_train_epochs=3, steps_per_epoch=50)
    # 3 epochs x 8 prompts = 24 answers; 24 x 64 = 1536 tokens at most; 3 x 50 = 150 steps
    assert (e.points, e.predictions, e.generated_tokens, e.total_steps) == (3, 24, 1536, 150)
    # max_steps wins over epochs: 120 steps of 50 end in a third, partial epoch
    assert estimate_cost(CONFIG, num_train_epochs=9, max_steps=120, steps_per_epoch=50).points == 3
    # 2.5 epochs: the Trainer runs 3 epoch loops
    assert estimate_cost(CONFIG, num_train_epochs=2.5, steps_per_epoch=10).points == 3


def test_several_answers_per_prompt_multiply_the_answers_per_point() -> None:
    config = CONFIG.model_copy(update={"num_samples": 4, "do_sample": True})
    e = estimate_cost(config, num_train_epochs=3, steps_per_epoch=50)
    # 3 epochs x 8 prompts x 4 answers = 96 answers; 96 x 64 tokens at most
    assert (e.prompts, e.predictions, e.generated_tokens) == (32, 96, 96 * 64)


def test_eval_frequency_follows_the_eval_strategy() -> None:
    def points(**plan: Any) -> int | None:
        return estimate_cost(CONFIG, frequency="eval", **plan).points

    # every 300 of 1000 steps: 300, 600, 900, and the Trainer's final evaluation at 1000
    assert points(max_steps=1000, eval_strategy="steps", eval_steps=300) == 4
    # a fraction: ceil(1000 x 0.25) = every 250 steps: 250, 500, 750, 1000
    assert points(max_steps=1000, eval_strategy="steps", eval_steps=0.25) == 4
    assert points(max_steps=1000, eval_strategy="steps", eval_steps=500) == 2
    assert points(num_train_epochs=2, eval_strategy="epoch") == 2
    nothing = estimate_cost(CONFIG, frequency="eval", max_steps=10, eval_strategy="no")
    assert (nothing.points, nothing.predictions) == (0, 0) and "'no'" in nothing.notes[0]


def test_steps_frequency_counts_whole_intervals() -> None:
    e = estimate_cost(CONFIG, frequency="steps", max_steps=1000)
    assert (e.points, e.predictions, e.generated_tokens) == (10, 80, 5120)  # 1000 / 100 steps
    # 2.5 epochs x 100 steps = 250 steps: points at 100 and 200
    assert estimate_cost(CONFIG, frequency="steps", num_train_epochs=2.5,
                         steps_per_epoch=100).points == 2


def test_time_share_and_budget() -> None:
    plan: dict[str, Any] = {"frequency": "steps", "max_steps": 1000, "tokens_per_second": 128,
                            "mean_completion_tokens": 32, "seconds_per_step": 0.5}
    e = estimate_cost(CONFIG, **plan)
    # 80 answers x 32 tokens = 2560 tokens / 128 per second = 20 s; 1000 x 0.5 s = 500 s: 4%
    assert (e.expected_tokens, e.seconds, e.training_seconds) == (2560, 20.0, 500.0)
    assert e.share == pytest.approx(0.04) and not e.over_budget and e.warning is None
    tight = estimate_cost(CONFIG.model_copy(update={"overhead_budget": 0.03}), **plan)
    assert tight.over_budget and tight.warning is not None
    assert "4.0% of the training time" in tight.warning and "budget of 3%" in tight.warning
    # without a measured answer length: every answer is assumed to reach max_new_tokens
    upper = estimate_cost(CONFIG, frequency="steps", max_steps=1000, tokens_per_second=128)
    assert upper.seconds == 40.0 and "upper bound" in upper.notes[0]  # 5120 / 128


def test_a_missing_plan_or_set_size_is_named() -> None:
    with pytest.raises(ConfigError, match="needs num_train_epochs"):
        estimate_cost(CONFIG)
    with pytest.raises(ConfigError, match="needs eval_steps"):
        estimate_cost(CONFIG, frequency="eval", max_steps=10, eval_strategy="steps")
    with pytest.raises(ConfigError, match="pass the set's size"):
        estimate_cost(PredictionsConfig(source="set", set="golden"), num_train_epochs=1)
    assert estimate_cost(PredictionsConfig(source="set", set="golden"), prompts=50,
                         num_train_epochs=2).predictions == 100


def write_measured_run(store: Any) -> None:
    """A run whose first point (step 10 of 100, 4 answers of 10 tokens) took 2 s to generate,
    12 s after recording started."""
    config = {"sample_count": 4, "sample_frequency": "steps", "step_interval": 10,
              "max_new_tokens": 32}
    store.create_run(Run(id="r", config={"predictions": config, "training_args": {}}))
    rows = [Prediction(run_id="r", step=10, prompt_id=f"p{i}", sample_index=i,
                       completion_tokens=10) for i in range(4)]
    store.write_eval_point(EvalPoint(run_id="r", step=10, epoch=0.5, generation_ms=2000.0,
                                     card={"elapsed_seconds": 12.0, "max_steps": 100}), rows)


def test_a_run_is_projected_from_its_first_evaluation_point(store: Any) -> None:
    write_measured_run(store)
    e = estimate_from_run(store, "r")
    # (12 - 2) s for 10 steps = 1 s/step x 100 steps = 100 s of training; 100 / 10 = 10 points
    # x 4 = 40 answers x 10 tokens = 400 tokens at 40 / 2 s = 20 tokens/s = 20 s: 20%
    assert (e.points, e.predictions, e.expected_tokens) == (10, 40, 400)
    assert e.seconds == pytest.approx(20.0) and e.training_seconds == pytest.approx(100.0)
    assert e.share == pytest.approx(0.2) and e.over_budget

    from fastapi.testclient import TestClient

    from predwatch.server.app import create_app

    client = TestClient(create_app(store, Settings()))
    measured = client.post("/api/estimate", json={"run_id": "r"}).json()
    assert measured["share"] == pytest.approx(0.2)
    planned = client.post("/api/estimate", json={
        "config": {"sample_count": 8, "max_new_tokens": 64}, "num_train_epochs": 3,
        "steps_per_epoch": 50}).json()
    assert (planned["points"], planned["predictions"]) == (3, 24)
    assert client.post("/api/estimate", json={"run_id": "nope"}).status_code == 404


def test_the_recorder_warns_after_the_first_point_when_over_budget(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Slow(FakeGenerator):
        def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]
                     ) -> list[Generation]:
            time.sleep(0.05)
            return super().generate(samples, params)

    recorder = Recorder({"sample_count": 2}, samples=[{"prompt": "a"}, {"prompt": "b"}],
                        db=sqlite_url, spool_dir=str(tmp_path / "spool"))
    recorder.start()
    time.sleep(0.02)  # "training" far shorter than generating: far over a 5% budget
    with caplog.at_level(logging.WARNING, logger="predwatch"):
        recorder.record(generator=Slow(), step=10, extra_card={"max_steps": 20})
        recorder.record(generator=Slow(), step=20, extra_card={"max_steps": 20})
    recorder.close()
    warnings = [r.message for r in caplog.records if "budget" in r.message]
    assert len(warnings) == 1 and "projected to take" in warnings[0]  # once, after the first


def test_the_estimate_command_prints_a_plan_and_a_measured_run(tmp_path: Path) -> None:
    config = tmp_path / "predictions.json"
    config.write_text(json.dumps({"sample_count": 8, "max_new_tokens": 64,
                                  "sample_frequency": "steps", "step_interval": 100}))
    runner = CliRunner()
    planned = runner.invoke(main, ["estimate", "--config", str(config), "--max-steps", "1000",
                                   "--tokens-per-second", "128", "--seconds-per-step", "0.5"])
    assert planned.exit_code == 0, planned.output
    assert "answers in the run" in planned.output and "80" in planned.output
    assert "share of training time" in planned.output and "8.0%" in planned.output  # 40 / 500
    assert "warning:" in planned.output

    from predwatch.storage import open_store

    db = tmp_path / "p.db"
    with open_store(f"sqlite:///{db}") as store:
        write_measured_run(store)
    measured = runner.invoke(main, ["estimate", "--run", "r", "--db", str(db), "--json"])
    assert measured.exit_code == 0, measured.output
    assert json.loads(measured.output)["predictions"] == 40
    missing = runner.invoke(main, ["estimate", "--config", str(config)])
    assert missing.exit_code == 1 and "needs --max-steps" in missing.output  # the flag


def test_a_set_run_answers_at_most_its_set_size() -> None:
    small_set = PredictionsConfig(source="set", set="golden", sample_count=10)
    # 3 items, sample_count 10: the run answers 3 per point, 2 epochs = 6
    e = estimate_cost(small_set, set_size=3, num_train_epochs=2)
    assert (e.prompts, e.predictions) == (3, 6)
    assert estimate_cost(small_set, set_size=50, num_train_epochs=2).prompts == 10
    whole_set = PredictionsConfig(source="set", set="golden")
    assert estimate_cost(whole_set, set_size=7, num_train_epochs=1).prompts == 7
    assert estimate_cost(small_set, prompts=4, set_size=3, num_train_epochs=1).prompts == 4
    assert estimate_cost(CONFIG, set_size=3, num_train_epochs=1).prompts == 8  # not a set run


def test_the_estimate_command_counts_a_small_sets_items(tmp_path: Path) -> None:
    items = tmp_path / "golden.jsonl"
    items.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n"
                             for i in range(3)))
    config = tmp_path / "predictions.json"
    config.write_text(json.dumps({"source": "set", "set": str(items), "sample_count": 10,
                                  "sample_frequency": "steps", "step_interval": 100}))
    done = CliRunner().invoke(main, ["estimate", "--config", str(config), "--max-steps", "1000",
                                     "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert (result["prompts"], result["predictions"]) == (3, 30)  # 10 points x 3 items


def test_the_api_and_the_config_builder_count_a_stored_sets_items(store: Any,
                                                                   tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from predwatch.server.app import create_app
    from predwatch.sets.stored import import_set

    items = tmp_path / "golden.jsonl"
    items.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n"
                             for i in range(3)))
    import_set(store, items, name="golden")
    client = TestClient(create_app(store, Settings()))
    config = {"source": "set", "set": "golden", "sample_count": 10, "sample_frequency": "steps",
              "step_interval": 100}
    planned = client.post("/api/estimate", json={"config": config, "max_steps": 1000}).json()
    assert (planned["prompts"], planned["predictions"]) == (3, 30)  # 10 points x 3 items
    whole = client.post("/api/estimate", json={
        "config": {**config, "sample_count": None}, "max_steps": 1000}).json()
    assert whole["predictions"] == 30  # no sample_count: the whole set, sized from the store
    page = client.post("/config", data={
        "sample_frequency": "steps", "step_interval": "100", "source": "set", "set": "golden",
        "sample_count": "10", "max_steps": "1000"}).text
    assert "<dt>Answers</dt><dd>30 " in page and "(3 per point)" in page, page
