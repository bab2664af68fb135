"""The reproducibility card of an evaluation point: everything needed to regenerate its answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from predwatch.recording.recorder import Recorder
from predwatch.repro import card as repro

pytest.importorskip("transformers")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


def test_the_git_commit_is_the_training_scripts_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    script = repo / "train.py"
    script.write_text("print('train')\n")
    git(repo, "init", "-q")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.chdir(tmp_path)  # the working directory is not the script's repository
    repro.git_commit.cache_clear()
    facts = repro.static_facts()
    assert facts["git_commit"] == head and facts["script"] == str(script)
    assert {"predwatch", "torch", "transformers"} <= set(facts["library_versions"])

    script.write_text("print('changed')\n")
    repro.git_commit.cache_clear()
    assert repro.static_facts()["git_commit"] == head + "-dirty"
    repro.git_commit.cache_clear()


def record_card(model: Any, tokenizer: Any, tmp_path: Path, **config: Any) -> dict[str, Any]:
    recorder = Recorder(
        {"sample_count": 2, "max_new_tokens": 3, "batch_size": 2, "seed": 5, **config},
        samples=[{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}],
        db=f"sqlite:///{tmp_path / 'p.db'}", spool_dir=str(tmp_path / "spool"),
    )
    summary = recorder.record(
        model, tokenizer, step=3, epoch=1.0, checkpoint="out/checkpoint-3",
        extra_card={"world_size": 1, "max_steps": 9},
    )
    recorder.close()
    assert summary is not None
    from predwatch.storage import open_store

    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        return store.eval_points(recorder.run.id)[0].card


def test_the_card_holds_the_effective_generation_config_and_the_model_facts(
    tiny_model: Any, tmp_path: Path
) -> None:
    model, tokenizer = tiny_model
    card = record_card(model, tokenizer, tmp_path, repetition_penalty=1.3)
    gen = card["generation_config"]
    # model defaults (its special tokens) + predwatch's overrides + the seed
    assert gen["bos_token_id"] == tokenizer.bos_token_id
    assert gen["eos_token_id"] == [tokenizer.eos_token_id]
    assert (gen["max_new_tokens"], gen["repetition_penalty"], gen["seed"]) == (3, 1.3, 5)
    assert (card["batch_size"], card["padding_side"]) == (2, "left")
    assert (card["dtype"], card["precision"]) == ("float32", "fp32")
    assert len(card["tokenizer_hash"]) == 64 and len(card["chat_template_hash"]) == 64
    assert (card["step"], card["checkpoint"], card["world_size"]) == (3, "out/checkpoint-3", 1)
    assert card["generation_params"]["seed"] == 5 and card["elapsed_seconds"] >= 0
    assert {"predwatch", "torch", "transformers", "tokenizers"} <= set(card["library_versions"])
    assert "python" in card and "git_commit" in card


def test_the_card_names_the_batch_size_an_unset_one_resolved_to(
    tiny_model: Any, tmp_path: Path
) -> None:
    model, tokenizer = tiny_model
    card = record_card(model, tokenizer, tmp_path, batch_size=None)
    assert card["generation_params"]["batch_size"] is None
    assert card["batch_size"] == 32  # the default for a model on the CPU


def test_the_card_names_a_peft_adapter_and_its_rank(tiny_model: Any, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from predwatch.generation.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(seed=1, tokenizer=tiny_model[1])
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    card = record_card(lora, tokenizer, tmp_path)
    assert (card["adapter_name"], card["adapter_rank"], card["adapter_type"]) == (
        "default", 4, "LORA")
    assert card["wrapper_class"].startswith("PeftModel")
    assert card["generation_config"]["max_new_tokens"] == 3
