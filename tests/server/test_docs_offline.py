"""The OpenAPI docs at /docs work offline: every asset is served by predwatch itself."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from predwatch.server import create_app
from predwatch.storage import open_store


def test_docs_page_loads_only_local_assets(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    client = TestClient(create_app(store))
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/static/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    spec = client.get("/openapi.json").json()
    assert "/api/training/local/predictions" in spec["paths"]
    store.close()
