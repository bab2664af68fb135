"""The records of prediction sets and their identities (pure: no I/O).

Identities, all derived from canonical JSON (``records.canonical_json``):

- ``item_id``: the item's own ``id`` when the file gives one; otherwise the first 16 hex digits
  of its ``prompt_id`` (sha256 of the canonical prompt or messages). The id follows the prompt:
  an item keeps it in every version while its prompt is unchanged, whatever happens to its
  expected answer, validators or tags (those make it *changed* in a diff). A prompt is unique
  in a version, so is its id.
- ``prompt_id`` (what predictions of the item record): the item's own ``id`` when given (DESIGN:
  "a user-supplied item id when the set gives one"), else ``records.prompt_identity`` of the
  prompt, the same hash a dataset sample of that prompt gets.
- a version's ``content_hash``: sha256 over the canonical list of its items sorted by their
  own ``id``, else by the first 16 hex digits of sha256 over their content (the order item ids
  had before they followed the prompt: versions stored then keep their hash); the order of
  items does not make a new version.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from predwatch.errors import ConfigError
from predwatch.records import Sample, canonical_json, prompt_identity

ITEM_ID_CHARS = 16
MAX_NAME_CHARS = 200
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ITEM_FIELDS = ("prompt", "messages", "ground_truth", "validators", "tags")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetItem(_Frozen):
    """One item of a set version: a prompt (or chat) with its expected answer and validators."""

    item_id: str
    custom_id: str | None = None  # the item's own ``id`` in the file, when it had one
    prompt_id: str
    prompt: str
    messages: list[dict[str, Any]] | None = None
    ground_truth: str | None = None
    validators: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @classmethod
    def build(
        cls,
        prompt: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        ground_truth: str | None = None,
        validators: list[dict[str, Any]] | None = None,
        tags: list[str] | None = None,
        custom_id: str | None = None,
    ) -> SetItem:
        """An item with its identities computed (tags are de-duplicated and sorted; an empty
        ground truth is none, as a CSV file, which cannot tell them apart, reads it)."""
        clean_tags = sorted({t for t in (tags or []) if t})
        ground_truth = ground_truth if ground_truth != "" else None
        prompt_id = prompt_identity(prompt=prompt, messages=messages)
        return cls(
            item_id=custom_id or prompt_id[:ITEM_ID_CHARS],
            custom_id=custom_id,
            prompt_id=custom_id or prompt_id,
            prompt=prompt,
            messages=messages,
            ground_truth=ground_truth,
            validators=list(validators or []),
            tags=clean_tags,
        )

    def content(self) -> dict[str, Any]:
        """What the item says, without its ids (equal content means an unchanged item)."""
        return item_content(
            self.prompt, self.messages, self.ground_truth, self.validators, self.tags
        )

    def changed_fields(self, other: SetItem) -> list[str]:
        """The content fields (and ``id``) in which ``other`` differs from this item."""
        changed = [f for f in _ITEM_FIELDS if getattr(self, f) != getattr(other, f)]
        if self.custom_id != other.custom_id:
            changed.insert(0, "id")
        return changed

    def to_sample(
        self, position: int, *, set_name: str, set_id: str | None, version: int | None
    ) -> Sample:
        """The ``Sample`` a run answers for this item (``source_index`` is its position)."""
        return Sample(
            prompt_id=self.prompt_id,
            source_index=position,
            prompt=self.prompt,
            messages=self.messages,
            ground_truth=self.ground_truth,
            sample_source="set",
            sample_source_id=set_name,
            set_id=set_id,
            set_version=version,
            item_id=self.item_id,
            validators=[dict(v) for v in self.validators],
            tags=list(self.tags),
        )


class SetVersion(_Frozen):
    """One immutable version of a set (its items are read separately)."""

    set_id: str
    name: str
    version: int
    content_hash: str
    item_count: int
    description: str | None = None
    source: str | None = None
    created_by: str | None = None
    created_at: datetime

    @property
    def ref(self) -> str:
        """``NAME@VERSION``: how configs and commands name exactly this version."""
        return f"{self.name}@{self.version}"


class PredictionSet(_Frozen):
    """A named set: its latest version and (when read one by one) every version."""

    id: str
    name: str
    description: str | None = None
    owner: str | None = None
    created_at: datetime
    latest_version: int | None = None
    item_count: int | None = None  # items of the latest version
    versions: list[SetVersion] = Field(default_factory=list)


class ItemChange(_Frozen):
    """An item present in both versions with different content: which fields changed, and
    for tags which were added and removed."""

    before: SetItem
    after: SetItem
    fields: list[str]
    tags_added: list[str] = Field(default_factory=list)
    tags_removed: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, before: SetItem, after: SetItem) -> ItemChange:
        return cls(before=before, after=after, fields=before.changed_fields(after),
                   tags_added=[t for t in after.tags if t not in before.tags],
                   tags_removed=[t for t in before.tags if t not in after.tags])


class SetDiff(_Frozen):
    """What changed from version ``a`` to version ``b`` of a set.

    Items are matched by ``item_id`` (which follows the prompt, so an item whose answer,
    validators or tags changed is matched there); items left over on both sides are then matched
    by prompt (the same prompt or chat, whatever their ids), so an item whose own ``id`` changed
    is reported as changed rather than as removed and added, and one whose id only differs in
    how it was derived (a version stored when ids hashed the whole item) as unchanged.
    """

    name: str
    a: int
    b: int
    added: list[SetItem] = Field(default_factory=list)
    removed: list[SetItem] = Field(default_factory=list)
    changed: list[ItemChange] = Field(default_factory=list)
    unchanged: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def item_content(
    prompt: str,
    messages: list[dict[str, Any]] | None,
    ground_truth: str | None,
    validators: list[dict[str, Any]],
    tags: list[str],
) -> dict[str, Any]:
    """The canonical content of an item: the chat when there is one, else the prompt text."""
    head: dict[str, Any] = {"messages": messages} if messages is not None else {"prompt": prompt}
    return {**head, "ground_truth": ground_truth, "validators": validators, "tags": tags}


def content_hash(items: list[SetItem]) -> str:
    """The content hash of a version made of ``items`` (independent of their order)."""
    canonical = [
        {"id": item.custom_id, **item.content()} for item in sorted(items, key=_hash_order)
    ]
    return hashlib.sha256(canonical_json(canonical).encode("utf-8")).hexdigest()


def _hash_order(item: SetItem) -> str:
    """Where an item sorts in ``content_hash``: by the id items had before ids followed the
    prompt (own id, else a hash of the whole content), so stored versions keep their hash."""
    if item.custom_id:
        return item.custom_id
    digest = hashlib.sha256(canonical_json(item.content()).encode("utf-8")).hexdigest()
    return digest[:ITEM_ID_CHARS]


def diff_items(name: str, a: int, before: list[SetItem], b: int, after: list[SetItem]) -> SetDiff:
    """Compare the items of two versions (see ``SetDiff`` for how items are matched)."""
    old = {i.item_id: i for i in before}
    new = {i.item_id: i for i in after}
    removed = [i for i in before if i.item_id not in new]
    added = [i for i in after if i.item_id not in old]
    changed = [ItemChange.of(old[k], new[k]) for k in new if k in old and old[k] != new[k]]
    unchanged = sum(1 for k in new if k in old and old[k] == new[k])
    # Same prompt, other content: a changed item rather than one removed and one added. The
    # prompt is compared by content, not prompt_id, which is the item's id once it has one.
    by_prompt: dict[str, list[SetItem]] = {}
    for item in removed:
        by_prompt.setdefault(_prompt_key(item), []).append(item)
    still_added = []
    for item in added:
        candidates = by_prompt.get(_prompt_key(item))
        if not candidates:
            still_added.append(item)
            continue
        match = candidates.pop(0)
        change = ItemChange.of(match, item)
        if change.fields:
            changed.append(change)
        else:  # the same item under an id derived the older way
            unchanged += 1
    kept = {i.item_id for left in by_prompt.values() for i in left}
    return SetDiff(
        name=name, a=a, b=b, added=still_added,
        removed=[i for i in removed if i.item_id in kept], changed=changed, unchanged=unchanged,
    )


def _prompt_key(item: SetItem) -> str:
    return prompt_identity(prompt=item.prompt, messages=item.messages)


def check_name(name: str) -> str:
    """A set name as given, or ``ConfigError`` saying what a name may contain."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > MAX_NAME_CHARS:
        raise ConfigError(
            f"invalid set name {name!r}: use letters, digits, '.', '_' and '-' (starting with a "
            f"letter or digit, at most {MAX_NAME_CHARS} characters)",
            detail=[{"field": "name", "reason": "invalid set name"}],
        )
    return name


def name_for_file(file_name: str) -> str:
    """The set name of a file: its name without data suffixes (``golden.jsonl.gz`` → ``golden``),
    other characters than letters, digits, '.', '_' and '-' replaced by '-'."""
    stem = file_name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:MAX_NAME_CHARS]
    return name or "set"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` → ``(name, version or None for the latest)``."""
    name, sep, version = ref.partition("@")
    check_name(name)
    if not sep or version in ("", "latest"):
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(
            f"invalid set reference {ref!r}: the version after '@' must be a number from 1",
            detail=[{"field": "set", "reason": "invalid version"}],
        )
    return name, int(version)
