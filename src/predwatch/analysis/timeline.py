"""One prompt's answers across a run, oldest first, with flips and the best point."""

from __future__ import annotations

from pydantic import BaseModel

from predwatch.analysis.compare import Flip, flip_between, keyed_answers
from predwatch.errors import NotFound
from predwatch.records import Prediction
from predwatch.storage.base import Store


class TimelineEntry(BaseModel):
    step: int
    epoch: float | None = None
    occurrence: int = 0  # a prompt drawn k+1 times per point has entries 0..k at each step
    prediction: Prediction
    changed: bool = False  # answer differs from the same occurrence's previous entry
    flip: Flip | None = None  # validation flipped since the same occurrence's previous entry
    is_best: bool = False  # lowest char error rate of the run (ties: earliest)


class Timeline(BaseModel):
    """One prompt's answers across a run, in step order (sample number 0; each step's newest
    attempt; a prompt drawn several times per point has one entry per occurrence)."""

    run_id: str
    prompt_id: str
    prompt: str
    messages: list[dict] | None = None
    ground_truth: str | None = None
    entries: list[TimelineEntry]
    best_step: int | None = None


# --- one prompt over time ---------------------------------------------------------------------
def prompt_timeline(
    store: Store, run_id: str, prompt_id: str, *, owner: str | None = None
) -> Timeline:
    """Every answer to one prompt across the run (sample number 0), oldest first.

    A step recorded again (a resumed run) shows its newest attempt. When the prompt is drawn
    several times at a point, each occurrence is compared with the same occurrence before.
    ``NotFound`` when the run has no answer to that prompt.
    """
    store.get_run(run_id, owner=owner)
    by_step: dict[int, list[Prediction]] = {}
    for p in store.timeline(run_id, prompt_id):
        by_step.setdefault(p.step, []).append(p)
    keyed: list[tuple[tuple[str, int], Prediction]] = []
    for step in sorted(by_step):
        found = by_step[step]
        if len(found) == 1 and found[0].sample_number == 0:  # the common case, without sorting
            keyed.append(((found[0].prompt_id, 0), found[0]))
        else:
            keyed.extend(keyed_answers(found).items())
    answers = [p for _, p in keyed]
    if not answers:
        raise NotFound(f"run {run_id!r} has no answers to prompt {prompt_id!r}")
    scored = [p for p in answers if p.char_error_rate is not None]
    best = min(scored, key=lambda p: p.char_error_rate or 0.0) if scored else None  # first wins
    entries = []
    previous: dict[int, Prediction] = {}  # occurrence -> its last answer
    for (_, occurrence), p in keyed:
        prev = previous.get(occurrence)
        entries.append(TimelineEntry(
            step=p.step, epoch=p.epoch, occurrence=occurrence, prediction=p,
            changed=prev is not None and prev.prediction != p.prediction,
            flip=flip_between(prev, p) if prev is not None else None,
            is_best=p is best,
        ))
        previous[occurrence] = p
    last = answers[-1]
    return Timeline(run_id=run_id, prompt_id=prompt_id, prompt=last.prompt, messages=last.messages,
                    ground_truth=last.ground_truth, entries=entries,
                    best_step=best.step if best is not None else None)
