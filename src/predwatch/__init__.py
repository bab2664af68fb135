"""predwatch: record what a language model actually answers while it is being fine-tuned.

The public API. Heavy parts (torch, transformers, the database) are imported on first use, so
``import predwatch`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "Batch": "predwatch.delivery",
    "ConfigError": "predwatch.errors",
    "DataError": "predwatch.errors",
    "EvalPoint": "predwatch.records",
    "FakeGenerator": "predwatch.generation.fake",
    "Generation": "predwatch.records",
    "HFGenerator": "predwatch.generation.hf",
    "Prediction": "predwatch.records",
    "PredictionsCallback": "predwatch.integrations.transformers",
    "PredictionsConfig": "predwatch.config",
    "PredwatchError": "predwatch.errors",
    "Recorder": "predwatch.recording.recorder",
    "Run": "predwatch.records",
    "Sample": "predwatch.records",
    "Settings": "predwatch.config",
    "Spool": "predwatch.delivery",
    "StoreSink": "predwatch.delivery",
    "estimate_cost": "predwatch.recording.estimate",
    "import_set": "predwatch.sets.stored",
    "open_store": "predwatch.storage",
    "regenerate": "predwatch.repro.regenerate",
    "run_validators": "predwatch.scoring",
    "score_prediction": "predwatch.scoring",
    "select_samples": "predwatch.sampling",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'predwatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
