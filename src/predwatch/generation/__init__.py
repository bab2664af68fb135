"""Generators: turn samples into answers.

``HFGenerator`` is imported lazily (on first attribute access) so that importing
``predwatch.generation`` does not import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from predwatch.generation.base import Generator
from predwatch.generation.fake import FakeGenerator

if TYPE_CHECKING:
    from predwatch.generation.hf import HFGenerator

__all__ = ["FakeGenerator", "Generator", "HFGenerator"]


def __getattr__(name: str) -> Any:
    if name == "HFGenerator":
        try:
            from predwatch.generation.hf import HFGenerator
        except ImportError as exc:
            if exc.name in ("torch", "transformers"):
                from predwatch.errors import MissingDependency

                raise MissingDependency(exc.name, "hf") from exc
            raise
        return HFGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
