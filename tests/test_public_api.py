"""The public API: a sorted, complete ``__all__`` whose names all resolve."""

from __future__ import annotations

import importlib

import predwatch


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert predwatch.__all__ == sorted(predwatch.__all__)
    for name in predwatch.__all__:
        assert getattr(predwatch, name) is not None, name


def test_all_lists_the_public_names_of_the_core_modules() -> None:
    expected = {
        "predwatch.recording.recorder": ["Recorder"],
        "predwatch.config": ["PredictionsConfig", "Settings"],
        "predwatch.records": ["Prediction", "EvalPoint", "Run", "Sample", "Generation"],
    }
    for module, names in expected.items():
        mod = importlib.import_module(module)
        for name in names:
            assert name in predwatch.__all__ and getattr(mod, name) is getattr(predwatch, name)
