"""Running a plan: the Ray connection, the scheduler and its Ray-free core, the embedded node's care."""

from __future__ import annotations

from typing import Any

__all__ = ['RunResult', 'run_plan']


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package costs nothing until its API is used.
    if name in __all__:
        from orchestrator.run.api import RunResult, run_plan  # noqa: F401

        return locals()[name]
    raise AttributeError(f"module 'orchestrator.run' has no attribute {name!r}")
