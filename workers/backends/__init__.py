"""The backend registry: name -> runner class.

Adding a backend is adding one module here that defines a ``Runner`` subclass decorated with
``@register``, and naming that module in ``_MODULES``.
"""

from __future__ import annotations

import importlib

from workers.backends.base import BackendOptions, Runner, SkipTrial

__all__ = ["BackendOptions", "Runner", "SkipTrial", "get", "register", "registry"]

_MODULES = ("torch_eager", "torch_cudagraph", "torch_compile", "ort", "sleep", "fault")
_REGISTRY: dict[str, type[Runner]] = {}


def register(cls: type[Runner]) -> type[Runner]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"backend name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Runner]]:
    """Every registered backend, by name (imports the backend modules once)."""
    for mod in _MODULES:
        importlib.import_module(f"workers.backends.{mod}")
    return dict(_REGISTRY)


def get(name: str) -> type[Runner]:
    runners = registry()
    if name not in runners:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(runners))}")
    return runners[name]
