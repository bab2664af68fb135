"""Prediction sets: curated, versioned lists of prompts ("golden sets") kept in the database.

```python
from predwatch.sets import read_items
items = read_items("golden.jsonl")              # JSON / JSON Lines / CSV, gzip, or a Dataset
```
Nothing here touches a database or the network: versions live in the database through
``predwatch.storage``; a run's prompts from a set come from ``predwatch.recording.set_source``.

- ``model``: ``SetItem``, ``SetVersion``, ``PredictionSet``, ``SetDiff`` and how ids are made.
- ``files``: reading items from files and datasets; ``export``: writing them back.
"""

from predwatch.sets.export import export_file, item_record, write_items
from predwatch.sets.files import item_from_record, read_items
from predwatch.sets.model import (
    ItemChange,
    PredictionSet,
    SetDiff,
    SetItem,
    SetVersion,
    content_hash,
    diff_items,
    parse_ref,
)

__all__ = [
    "ItemChange",
    "PredictionSet",
    "SetDiff",
    "SetItem",
    "SetVersion",
    "content_hash",
    "diff_items",
    "export_file",
    "item_from_record",
    "item_record",
    "parse_ref",
    "read_items",
    "write_items",
]
