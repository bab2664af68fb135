"""Resolve where a run's prompts come from (a set, a file, or the training data) into samples."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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


def reads_store(config: PredictionsConfig, source: Any = None) -> bool:
    """Whether ``load_samples`` reads a database or a server (a stored set, or a set file
    imported into the database): I/O that can wait on a dead or locked destination."""
    ready = isinstance(source, list) and source and all(isinstance(s, Sample) for s in source)
    return config.source == "set" and not ready


class BackgroundLoad:
    """Loads the prompts on a thread of its own, so a dead or locked database (or server)
    holding a stored set costs the training thread at most the bounded waits of ``wait``.

    Args:
        load: returns the samples (``load_samples`` with its arguments).
        what: what is read, for the log (``set 'golden' from sqlite:///...``).
    """

    def __init__(self, load: Callable[[], list[Sample]], what: str) -> None:
        self.what = what
        self.samples: list[Sample] | None = None
        self.error: Exception | None = None
        self._load = load
        self._done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="predwatch-samples").start()

    def _run(self) -> None:
        try:
            self.samples = self._load()
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits (it raises it)
            self.error = exc
            log.error("predwatch: could not read the prompts (%s): %s: %s; no evaluation "
                      "point is recorded until they can be read", self.what,
                      type(exc).__name__, exc)
        finally:
            self._done.set()

    def wait(self, timeout: float) -> list[Sample] | None:
        """The samples, waiting at most ``timeout`` seconds; None while still loading.

        Raises:
            Exception: What loading raised.
        """
        if not self._done.wait(timeout):
            return None
        if self.error is not None:
            raise self.error
        assert self.samples is not None
        return self.samples
