"""Sets kept in a ``Store``: import a file as a version, diff two versions.

No SQL here: both are compositions of ``Store`` methods (``create_set_version``,
``list_set_items``) with the file readers and the diff of ``predwatch.sets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from predwatch.errors import ConfigError
from predwatch.sets.files import read_items
from predwatch.sets.model import SetDiff, SetVersion, diff_items, name_for_file

if TYPE_CHECKING:
    from predwatch.storage.base import Store


def import_set(
    store: Store,
    source: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
) -> tuple[SetVersion, bool]:
    """Read items from a file, list or ``datasets.Dataset`` and store them as a version.

    ``name`` defaults to the file's stem (required for a list or a Dataset). Returns
    ``(version, created)`` as ``Store.create_set_version`` does.
    """
    is_path = isinstance(source, (str, Path))
    if name is None:
        if not is_path:
            raise ConfigError("a set imported from a list or a Dataset needs a name")
        name = name_for_file(Path(source).name)
    items = read_items(source)
    return store.create_set_version(
        name, items, description=description, owner=owner,
        source=Path(source).name if is_path else None,
    )


def diff_versions(store: Store, name: str, a: int, b: int | None = None) -> SetDiff:
    """What changed from version ``a`` to version ``b`` (default: the latest) of a set."""
    first, before = store.list_set_items(name, a)
    second, after = store.list_set_items(name, b)
    return diff_items(name, first.version, before, second.version, after)
