"""The predwatch server: a FastAPI app over a store (JSON API, HTML pages, live stream).

```python
from predwatch.server import create_app
app = create_app(open_store("sqlite:///predwatch.db"), Settings.from_env())
```
Run it with ``predwatch serve`` (``predwatch.server.run.serve``).
"""

from predwatch.server.app import create_app

__all__ = ["create_app"]
