"""The scenario registry: name -> scenario class, found in this package's modules.

Adding a load scenario is adding one module to this package that defines a ``Scenario`` subclass
with a ``name`` (plus the schema columns it fills and its row in the docs' scenario table). Nothing
lists the modules: every module here whose name does not start with ``_`` is imported, and every
``Scenario`` subclass defined in it that sets ``name`` is a scenario. ``register`` adds one defined
elsewhere (a test's, a plugin's) at run time.

The registry is read on first use (``get``, ``names``, ...), not at import: ``workers.contract``
imports this package, and the scenario modules may import the contract. ``_session`` (a runner's
life cycle, its lane threads, typed results), ``_lanes`` (several requests in flight) and
``_repeats`` (one at a time) are the measuring machinery the scenarios share; they import numpy
and are imported only when a trial runs.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from types import ModuleType
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from workers.scenarios.base import DEFAULT, PARAMS, Figure, Row, Scenario, Settings

__all__ = ["DEFAULT", "PARAMS", "Figure", "Name", "Row", "Scenario", "Settings", "get", "is_registered", "label",
           "interleaving", "names", "of", "one_at_a_time", "register", "registry", "tag", "unregister", "unregistered",
           "using"]


def scenarios_in(module: ModuleType) -> list[type[Scenario]]:
    """The scenarios ``module`` defines: its own ``Scenario`` subclasses that set ``name``."""
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Scenario) and obj.__module__ == module.__name__
            and "name" in vars(obj)]


def discover(package: str) -> dict[str, type[Scenario]]:
    """Every scenario defined in the public modules of ``package``, by name."""
    pkg = importlib.import_module(package)
    found: dict[str, type[Scenario]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            for cls in scenarios_in(importlib.import_module(f"{package}.{info.name}")):
                _add(found, cls)
    return found


def _add(found: dict[str, type[Scenario]], cls: type[Scenario]) -> None:
    if cls.name in found and found[cls.name] is not cls:
        other = found[cls.name]
        raise ValueError(f"scenario name {cls.name!r} is used twice: {other.__module__}.{other.__qualname__} "
                         f"and {cls.__module__}.{cls.__qualname__}")
    unknown = set(cls.fields) - set(PARAMS)
    if unknown:
        raise ValueError(f"scenario {cls.name!r} uses fields a trial lacks: {', '.join(sorted(unknown))}")
    found[cls.name] = cls


@functools.cache
def _registry() -> dict[str, type[Scenario]]:
    found = discover(__name__)
    if DEFAULT not in found:
        raise ValueError(f"no module of {__name__} defines the default scenario, {DEFAULT!r}")
    return found


def register(cls: type[Scenario]) -> type[Scenario]:
    """Add a scenario defined outside this package (usable as a class decorator); returns it."""
    _add(_registry(), cls)
    return cls


def unregister(name: str) -> None:
    """Remove a scenario ``register`` added (a test's, when it is done)."""
    found = _registry()
    if name == DEFAULT or found.get(name) is None or found[name].__module__.startswith(f"{__name__}."):
        raise ValueError(f"scenario {name!r} was not registered at run time")
    del found[name]


def registry() -> dict[str, type[Scenario]]:
    """Every scenario, by name (imports the scenario modules once)."""
    return dict(_registry())


def names() -> tuple[str, ...]:
    """Every scenario's name, in their ``order``."""
    return tuple(sorted(_registry(), key=lambda n: (_registry()[n].order, n)))


def using(field: str) -> list[str]:
    """The scenarios whose trials use ``field`` (``PARAMS``' names), in their order."""
    return [n for n in names() if field in _registry()[n].fields]


def _known(name: str) -> str:
    """A scenario's name, checked against the registry when a plan is read (a scenario registered at
    run time is known too); an unknown one is refused as pydantic refuses a literal."""
    known = tuple(n for n in names() if not _registry()[n].interleaves)  # given by measure.interleave only
    if name not in known:
        expected = " or ".join(filter(None, [", ".join(f"'{n}'" for n in known[:-1]), f"'{known[-1]}'"]))
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


#: A scenario's name in a plan (pydantic).
Name = Annotated[str, AfterValidator(_known)]


def interleaving() -> str:
    """The name of the scenario that measures interleaved units (``Scenario.interleaves``)."""
    return next(n for n in names() if _registry()[n].interleaves)


def get(name: str) -> type[Scenario]:
    found = _registry()
    if name not in found:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(names())}")
    return found[name]


def of(row: Row | Any) -> type[Scenario]:
    """The scenario of a row (a null ``scenario``: a run older than scenarios, the default) or of a trial.

    A row of a scenario not registered here (read back from a run made with a scenario of its own)
    gets a stand-in: see ``unregistered``; a trial's must be registered (KeyError)."""
    if isinstance(row, Mapping):
        name = row.get("scenario") or DEFAULT
        return _registry().get(name) or unregistered(name)
    return get(getattr(row, "scenario", None) or DEFAULT)


@functools.cache
def unregistered(name: str) -> type[Scenario]:
    """The stand-in for a stored row's scenario that is not registered here: judged on the default
    scenario's figures and rules, shown under its own name (its rows group apart), in the results
    table only (no plot: what its figures mean is its own module's)."""
    base = _registry()[DEFAULT]
    doc = f"{name}: not registered here; its rows are judged as {DEFAULT} rows."
    return type(f"Unregistered_{name}", (base,), {"name": name, "report": "table", "__doc__": doc,
                                                   "__module__": __name__})


def is_registered(row: Row) -> bool:
    """Whether a row's scenario is registered here (a null one is the default's)."""
    return (row.get("scenario") or DEFAULT) in _registry()


def tag(row: Row) -> str:
    """A row's scenario in a few words (``Scenario.tag``): empty for the default scenario."""
    return of(row).tag(row)


def one_at_a_time(trial: Any) -> dict[str, str]:
    """The measure keys a trial sets above their default that time requests one at a time and its
    scenario does not: key -> why (the worker's ``skipped`` reason; a plan where every trial has a
    key here is refused at that key)."""
    unmet = {}
    if trial.measure.input_pool > 1 and get(trial.scenario).uses_lanes:
        unmet["input_pool"] = (f"measure.input_pool is timed one request at a time; the {trial.scenario} "
                               "scenario's lanes each keep their own input")
    if trial.measure.process_repeats > 1 and trial.scenario != DEFAULT:
        unmet["process_repeats"] = (f"measure.process_repeats pools the samples of requests timed one at a time; "
                                    f"the {trial.scenario} scenario's figures are not merged across processes")
    return unmet


def label(row: Row) -> str:
    """A row's scenario in a few words, the default's name where ``tag`` is empty (table cells)."""
    return tag(row) or DEFAULT


