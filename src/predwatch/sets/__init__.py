"""Prediction sets: curated, versioned lists of prompts ("golden sets") kept in the database.

```python
from predwatch.sets import read_items, create_version, samples_for_config
items = read_items("golden.jsonl")              # JSON / JSON Lines / CSV, gzip, or a Dataset
version, created = create_version(store, "golden", items)   # golden@1 (or the same one again)
```

- ``model``: ``SetItem``, ``SetVersion``, ``PredictionSet``, ``SetDiff`` and how ids are made.
- ``files``: reading items from files and datasets; ``export``: writing them back.
- ``store``: versions in the database (``create_version``, ``list_sets``, ``list_items``, ...).
- ``samples``: ``samples_for_config``, what a run with ``source: set`` answers.
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
from predwatch.sets.samples import fetch_set, samples_for_config
from predwatch.sets.store import (
    create_version,
    diff_versions,
    get_set,
    get_version,
    import_set,
    list_items,
    list_sets,
)

__all__ = [
    "ItemChange",
    "PredictionSet",
    "SetDiff",
    "SetItem",
    "SetVersion",
    "content_hash",
    "create_version",
    "diff_items",
    "diff_versions",
    "export_file",
    "fetch_set",
    "get_set",
    "get_version",
    "import_set",
    "item_from_record",
    "item_record",
    "list_items",
    "list_sets",
    "parse_ref",
    "read_items",
    "samples_for_config",
    "write_items",
]
