"""infer-orch's driver side: plans, Ray connection, scheduling, results."""

from __future__ import annotations

from typing import Any

__all__ = ["load_results"]


def __getattr__(name: str) -> Any:
    # Lazy: reading results needs pyarrow, which checking a plan (``infer-orch validate``) does not.
    if name == "load_results":
        from orchestrator.results.read import load_results

        return load_results
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
