"""Storage: one store for SQLite and PostgreSQL, its schema and its migrations.

```python
from predwatch.storage import open_store
store = open_store("sqlite:///predwatch.db")   # or "postgresql+psycopg://user@host/db"
```
Importing this package loads no SQLAlchemy: ``Store`` and ``Page`` (``base``) are plain
Python, and the SQL implementation is imported when a store is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from predwatch.storage.base import Page, Store

if TYPE_CHECKING:
    from predwatch.storage.sql import SQLStore

__all__ = ["Page", "SQLStore", "Store", "open_store"]


def open_store(url: str = "sqlite:///predwatch.db", *, create: bool = True) -> SQLStore:
    """Open the store at ``url`` (SQLite file or ``postgresql+psycopg://``).

    An empty database is created at the newest schema (unless ``create`` is False); an older
    one raises ``SchemaOutdated`` with the upgrade command; an unreachable or locked one
    ``StorageUnavailable``.
    """
    from predwatch.storage.sql import SQLStore

    return SQLStore(url, create=create)


def __getattr__(name: str) -> Any:
    if name == "SQLStore":
        from predwatch.storage.sql import SQLStore

        return SQLStore
    raise AttributeError(f"module 'predwatch.storage' has no attribute {name!r}")
