"""Storage: one store for SQLite and PostgreSQL, its schema and its migrations.

```python
from predwatch.storage import open_store
store = open_store("sqlite:///predwatch.db")   # or "postgresql+psycopg://user@host/db"
```
"""

from predwatch.storage.base import Page, Store
from predwatch.storage.sql import SQLStore, open_store

__all__ = ["Page", "SQLStore", "Store", "open_store"]
