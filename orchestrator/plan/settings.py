"""A backend entry's scenario settings: the plan's ``scenario``, the matrix's scenario axes and
the entry's own ``scenario``, merged key by key; each scenario checks the settings it is given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import PlanError
from workers import scenarios
from workers.contract import Trial

if TYPE_CHECKING:
    from orchestrator.plan.schema import Plan

#: Matrix axes of the scenario, by the ScenarioSettings key they set.
MATRIX_SCENARIO_AXES = {"name": "scenarios", "concurrency": "concurrency", "rates": "rates"}


def merged_settings(plan: Plan, entry: Any) -> scenarios.Settings:
    """The scenario settings of a backend entry: the plan's ``scenario``, the matrix's scenario axes,
    then the entry's own ``scenario`` (key by key); each value a list (an axis), or None; ``name``
    the default scenario where none is given. Pure: ``scenario_settings`` checks them."""
    merged = {k: getattr(plan.scenario, k) for k in type(plan.scenario).model_fields}
    for key, axis in MATRIX_SCENARIO_AXES.items():
        if getattr(plan.matrix, axis) is not None:
            merged[key] = getattr(plan.matrix, axis)
    own = entry.scenario
    if own is not None:
        merged.update({k: getattr(own, k) for k in own.model_fields_set if getattr(own, k) is not None})
    return {**merged, "name": merged["name"] or [scenarios.DEFAULT]}  # type: ignore[typeddict-item]


def scenario_settings(plan: Plan, entry: Any, i: int, source: str) -> scenarios.Settings:
    """``merged_settings`` of matrix.backends[i], checked: raises PlanError where a scenario lacks
    what it needs or a setting is given twice."""
    for key, axis in MATRIX_SCENARIO_AXES.items():
        if getattr(plan.matrix, axis) is None:
            continue
        if key in plan.scenario.model_fields_set and getattr(plan.scenario, key) is not None:
            raise PlanError(f"{source}: matrix.{axis}: also set as scenario.{key}; give it once")
    settings = merged_settings(plan, entry)
    own = entry.scenario
    where = f"matrix.backends[{i}]" + (".scenario" if own is not None else " (with the plan's scenario)")
    names = settings["name"]
    if own is not None and own.rates and not set(names) & set(scenarios.using("rate")):
        raise PlanError(f"{source}: {where}: rates are for the {' and '.join(scenarios.using('rate'))} scenario; "
                        f"this entry's scenarios are {', '.join(names)}")
    minimums = {"min_requests": settings["min_requests"] or Trial.min_requests,
                "min_duration_s": settings["min_duration_s"] or Trial.min_duration_s}
    for name in sorted(set(names), key=scenarios.names().index):  # each scenario checks its own settings
        problem = scenarios.get(name).check({**settings, **minimums}, plan.measure.max_time_s)  # type: ignore[arg-type]
        if problem:
            raise PlanError(f"{source}: {where}: {problem}")
    return settings


def list_settings(where: str, settings: Any) -> list[tuple[str, list[Any]]]:
    """(key, values) of each setting given as a list (an axis) in a ``scenario:`` section."""
    if settings is None:
        return []
    return [(f"{where}.{k}", v) for k in type(settings).model_fields if isinstance(v := getattr(settings, k), list)]

