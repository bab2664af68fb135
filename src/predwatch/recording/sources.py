"""Resolve where a run's prompts come from (a set, a file, or the training data) into samples."""

from __future__ import annotations

import logging
from typing import Any

from predwatch.config import RECORDER_SETTINGS, PredictionsConfig, Settings
from predwatch.errors import ConfigError, DataError
from predwatch.records import Sample

log = logging.getLogger(__name__)


def load_samples(
    config: PredictionsConfig, source: Any = None, *, settings: Settings | None = None
) -> list[Sample]:
    """The prompts to answer at every evaluation point of a run.

    Ready ``Sample`` objects (a list) are used as they are. Otherwise, precedence:
    ``source: set`` (a stored prediction set, or a file imported as one) >
    ``samples_path`` > the ``source`` argument (training data: a path, list or Dataset).
    Raises ``ConfigError``/``DataError`` naming what is wrong; never returns an empty list.
    """
    if isinstance(source, list) and source and all(isinstance(s, Sample) for s in source):
        return list(source)  # chosen already (a checkpoint job carries its run's samples)
    if config.source == "set":
        from predwatch.recording.set_source import samples_for_config

        settings = settings or Settings.from_env(only=RECORDER_SETTINGS)
        samples = samples_for_config(config, settings=settings)
    else:
        from predwatch.sampling import select_samples

        origin = config.samples_path if config.samples_path else source
        if origin is None:
            raise ConfigError(
                "no prompts to record: pass a dataset (PredictionsCallback(dataset=...) / "
                "Recorder(samples=...)) or set samples_path or source='set'",
                detail=[{"field": "samples_path", "reason": "missing"}],
            )
        # select_samples logs one warning summarising skipped and malformed records.
        selection = select_samples(
            origin, config.effective_sample_count, config.seed, fields=config.fields
        )
        samples = list(selection.samples)
    if not samples:
        raise DataError("no usable prompts were found for this run")
    return samples


def dropped_content_card(samples: list[Sample]) -> dict[str, Any]:
    """``{"dropped_content": {type: count}}`` for the card of every evaluation point: content
    parts (images, audio) left out of the prompts, so a point says what its model did not see.
    Empty when nothing was dropped."""
    total: dict[str, int] = {}
    for sample in samples:
        for kind, count in sample.dropped_content.items():
            total[kind] = total.get(kind, 0) + count
    if not total:
        return {}  # (select_samples has already logged what it dropped)
    return {"dropped_content": dict(sorted(total.items()))}
