"""Response classes shared by the API modules."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic_core import to_json


class JSON(Response):
    """JSON rendered by pydantic-core: records serialise directly (fast), NaN/inf become null."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")
