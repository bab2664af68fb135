"""Word-level diffs of two answers, for the timeline and compare pages (pure, no I/O).

Text is split into words, runs of punctuation and runs of whitespace, so a JSON answer that
changes one value shows that value changed rather than the whole line. Concatenating the
``equal`` and ``delete`` parts gives the old text back; ``equal`` and ``insert`` give the new.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["equal", "insert", "delete"]

_TOKEN = re.compile(r"\w+|[^\w\s]+|\s+")


@dataclass(frozen=True)
class DiffPart:
    """One run of text that is the same in both answers, only in the new one, or only in the old."""

    op: Op
    text: str


def tokenize(text: str) -> list[str]:
    """Words, punctuation runs and whitespace runs; ``"".join(tokenize(t)) == t``."""
    return _TOKEN.findall(text)


def word_diff(old: str, new: str) -> list[DiffPart]:
    """The word-level edit from ``old`` to ``new`` as a list of parts (adjacent parts merged).

    A replaced run is given as its deletion followed by its insertion.
    """
    a, b = tokenize(old or ""), tokenize(new or "")
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    parts: list[DiffPart] = []

    def add(op: Op, tokens: list[str]) -> None:
        text = "".join(tokens)
        if not text:
            return
        if parts and parts[-1].op == op:
            parts[-1] = DiffPart(op, parts[-1].text + text)
        else:
            parts.append(DiffPart(op, text))

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            add("equal", a[i1:i2])
        else:
            add("delete", a[i1:i2])
            add("insert", b[j1:j2])
    return parts


def similarity(old: str, new: str) -> float:
    """Share of tokens the two texts have in common (1.0: identical, 0.0: nothing shared)."""
    a, b = tokenize(old or ""), tokenize(new or "")
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
