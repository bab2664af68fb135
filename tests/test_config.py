"""PredictionsConfig: the original dict accepted unchanged, every bad field reported at once."""

from __future__ import annotations

import pytest

from predwatch.config import PredictionsConfig, Settings
from predwatch.errors import ConfigError

ORIGINAL = {
    "enabled": True,
    "sample_count": 10,
    "sample_frequency": "steps",
    "step_interval": 50,
    "samples_path": "data/samples.jsonl",
    "validators": {
        "json_parse": True,
        "json_schema": '{"type": "object", "required": ["answer"]}',
        "json_schema_path": None,
    },
}


def test_original_system_dict_is_accepted_unchanged() -> None:
    config = PredictionsConfig.from_dict(ORIGINAL)
    assert config.sample_count == 10
    assert config.step_interval == 50
    # a JSON string schema is parsed; json_parse is implied by the schema validator
    assert config.validators.specs() == [
        {"kind": "json_schema", "schema": {"type": "object", "required": ["answer"]}}
    ]


def test_defaults() -> None:
    config = PredictionsConfig()
    assert config.effective_sample_count == 5
    assert config.sample_frequency == "epoch"
    assert config.seed == 42
    assert config.max_new_tokens == 256
    assert config.generation_params()["do_sample"] is False


def test_every_bad_field_is_listed_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        PredictionsConfig.from_dict(
            {
                "sample_count": 0,
                "sample_frequency": "hourly",
                "temprature": 0.7,
                "top_p": 3,
                "validators": {"json_schema": "{not json"},
            }
        )
    fields = {p["field"] for p in info.value.detail}
    assert {"sample_count", "sample_frequency", "temprature", "top_p",
            "validators.json_schema"} <= fields
    text = str(info.value)
    assert "5 problems" in text
    assert "temprature: unknown field" in text
    assert "sample_count: must be at least 1" in text


def test_steps_frequency_needs_an_interval_of_at_least_ten() -> None:
    with pytest.raises(ConfigError, match="step_interval is required"):
        PredictionsConfig.from_dict({"sample_frequency": "steps"})
    with pytest.raises(ConfigError, match="step_interval: must be at least 10"):
        PredictionsConfig.from_dict({"sample_frequency": "steps", "step_interval": 5})


def test_limits_are_tunable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDWATCH_MAX_SAMPLE_COUNT", "500")
    monkeypatch.setenv("PREDWATCH_MIN_STEP_INTERVAL", "2")
    config = PredictionsConfig.from_dict(
        {"sample_count": 400, "sample_frequency": "steps", "step_interval": 2}
    )
    assert config.sample_count == 400


def test_the_sample_count_cap_is_a_config_field_with_a_clear_message() -> None:
    assert PredictionsConfig.from_dict({"sample_count": 800}).sample_count == 800
    with pytest.raises(ConfigError) as info:
        PredictionsConfig.from_dict({"sample_count": 5000})
    assert [p["field"] for p in info.value.detail] == ["sample_count"]
    assert "5000 is above max_sample_count (1000)" in info.value.message
    assert "set max_sample_count in this config" in info.value.message
    config = PredictionsConfig.from_dict({"sample_count": 5000, "max_sample_count": 5000})
    assert config.sample_count == 5000
    with pytest.raises(ConfigError, match="above max_sample_count \\(20\\)"):
        PredictionsConfig.from_dict({"sample_count": 21, "max_sample_count": 20})


def test_several_answers_per_prompt_need_sampling_and_name_the_field() -> None:
    assert PredictionsConfig().num_samples == 1
    config = PredictionsConfig.from_dict({"num_samples": 4, "do_sample": True})
    assert config.num_samples == 4 and config.generation_params()["num_samples"] == 4
    for bad, words in (({"num_samples": 4}, "need do_sample true"),
                       ({"num_samples": 4, "do_sample": True, "num_beams": 2}, "num_beams 1"),
                       ({"num_samples": 0}, "greater than or equal to 1"),
                       ({"num_samples": 65, "do_sample": True}, "less than or equal to 64"),
                       ({"num_samples": "many", "do_sample": True}, "valid integer")):
        with pytest.raises(ConfigError) as info:
            PredictionsConfig.from_dict(bad)
        assert [p["field"] for p in info.value.detail] == ["num_samples"], bad
        assert words in info.value.message and "num_samples" in info.value.message
    # one answer per prompt stays greedy-friendly
    assert PredictionsConfig.from_dict({"num_samples": 1, "num_beams": 4}).num_beams == 4


def test_the_config_field_wins_over_the_environment_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDWATCH_MAX_SAMPLE_COUNT", "10")
    with pytest.raises(ConfigError, match="above max_sample_count \\(10\\)"):
        PredictionsConfig.from_dict({"sample_count": 11})
    assert PredictionsConfig.from_dict(
        {"sample_count": 11, "max_sample_count": 11}
    ).sample_count == 11


def test_a_field_mapping_is_checked_when_the_config_is_read() -> None:
    config = PredictionsConfig.from_dict(
        {"fields": {"prompt": "query.text", "completion": "label", "system": "sys"}}
    )
    assert config.fields == {"prompt": "query.text", "completion": "label", "system": "sys"}
    bad = {
        "unknown name": ({"prompt": "q", "answer": "a"}, "unknown field 'answer'"),
        "no prompt": ({"completion": "a"}, "map 'prompt' or 'messages'"),
        "both": ({"prompt": "q", "messages": "m"}, "not both"),
        "empty step": ({"prompt": "a..b"}, "not a key or a dotted path"),
    }
    for fields, reason in bad.values():
        with pytest.raises(ConfigError) as info:
            PredictionsConfig.from_dict({"fields": fields})
        assert info.value.detail[0]["field"] == "fields"
        assert reason in info.value.detail[0]["reason"]


def test_validators_may_be_a_list_of_rules() -> None:
    config = PredictionsConfig.from_dict(
        {"validators": [{"kind": "regex", "pattern": "^\\d+$"}, {"kind": "not_truncated"}]}
    )
    assert [s["kind"] for s in config.validators.specs()] == ["regex", "not_truncated"]
    with pytest.raises(ConfigError, match="rule 0 has no 'kind'"):
        PredictionsConfig.from_dict({"validators": [{"pattern": "x"}]})


def test_settings_precedence_argument_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDWATCH_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("PREDWATCH_PORT", "9000")
    assert Settings.from_env().database_url == "sqlite:///from-env.db"
    assert Settings.from_env(database_url="sqlite:///arg.db").database_url == "sqlite:///arg.db"
    assert Settings.from_env().port == 9000
    monkeypatch.setenv("PREDWATCH_PORT", "nope")
    with pytest.raises(ConfigError, match="port"):
        Settings.from_env()


def test_auth_is_required_off_loopback_by_default() -> None:
    assert Settings(host="127.0.0.1").auth_required is False
    assert Settings(host="0.0.0.0").auth_required is True
    assert Settings(host="0.0.0.0", auth="off").auth_required is False
