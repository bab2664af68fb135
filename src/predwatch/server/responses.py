"""Response classes shared by the API modules."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic_core import to_json


class JSON(JSONResponse):
    """JSON rendered by pydantic-core: records serialise directly (fast), NaN/inf become null.

    A ``JSONResponse`` subclass, so routes answering with it still document their
    ``response_model`` in the OpenAPI document."""

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")
