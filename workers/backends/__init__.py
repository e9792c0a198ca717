"""The backend registry: name -> runner class, found in this package's modules.

Adding a backend is adding one module to this package that defines a ``Runner`` subclass with a
``name`` (and its row in the docs' backend table). Nothing lists the modules: every module here
is imported and every ``Runner`` subclass defined in it that sets ``name`` is a backend.

Importing a backend module must stay cheap (no torch, torchvision, onnxruntime at module level):
the driver imports them all to validate a plan's backend options.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

from workers.backends.base import BackendOptions, Offer, Runner, SkipTrial

__all__ = ["BackendOptions", "Offer", "Runner", "SkipTrial", "discover", "get", "math_before", "registry"]


def runners_in(module: ModuleType) -> list[type[Runner]]:
    """The backends ``module`` defines: its own ``Runner`` subclasses that set ``name``."""
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Runner) and obj.__module__ == module.__name__
            and "name" in vars(obj)]


def discover(package: str) -> dict[str, type[Runner]]:
    """Every backend defined in the modules of ``package``, by name. Two of one name are an error."""
    pkg = importlib.import_module(package)
    found: dict[str, type[Runner]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        for cls in runners_in(importlib.import_module(f"{package}.{info.name}")):
            if cls.name in found:
                other = found[cls.name]
                raise ValueError(f"backend name {cls.name!r} is used twice: {other.__module__}.{other.__qualname__} "
                                 f"and {cls.__module__}.{cls.__qualname__}")
            found[cls.name] = cls
    return found


@functools.cache
def _registry() -> dict[str, type[Runner]]:
    return discover(__name__)


def registry() -> dict[str, type[Runner]]:
    """Every backend, by name (imports the backend modules once)."""
    return dict(_registry())


def get(name: str) -> type[Runner]:
    runners = _registry()
    if name not in runners:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(runners))}")
    return runners[name]


def math_before(name: str) -> str | None:
    """The fp32 math mode backend ``name`` ran before trials had a ``math`` field (``Runner.math_before``;
    what a trial id leaves out: ``workers.contract.math_id``). A backend this process doesn't know: tf32,
    the default, so its ids stay what they were."""
    try:
        return get(name).math_before
    except KeyError:
        return "tf32"
