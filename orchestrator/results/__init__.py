"""A run on disk: part files as trials finish, compaction, reading runs back, resuming."""

from __future__ import annotations

from typing import Any

__all__ = ['load_results']


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package costs nothing until its API is used.
    if name in __all__:
        from orchestrator.results.read import load_results  # noqa: F401

        return locals()[name]
    raise AttributeError(f"module 'orchestrator.results' has no attribute {name!r}")
