"""Interleaved A/B (``measure.interleave``): which trials form one unit, and the unit one worker measures.

A plan with ``measure.interleave`` measures its trials in units: the trials that differ only in
their arm (the backend entry's label, or with ``by: model`` the model) and share everything else
(input shape, batch size, dtype, io, device, axes, math mode, seed) are timed in alternating rounds
by one worker process (``workers/scenarios/_interleave.py``); ``interleave.sets`` splits them
further, a unit per set. It is an explicit exception to the fresh-runner-per-trial rule, so its
trials are of a scenario of their own (``Scenario.interleaves``) and carry their arm in their ids:
``compare`` never matches them with ordinary rows, and an A/A pair (two entries of one
configuration) is two trials.

``expand`` asks ``trial_fields`` for each trial's scenario and arm and ``check`` for the units; the
run packs each unit into one trial (``units``: the base carries the others in ``arms``), and the
scheduler stores the rows the worker returns for each (``orchestrator.run.scheduler._rows``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from orchestrator.errors import PlanError
from workers import scenarios
from workers.config import did_you_mean
from workers.contract import Interleave, Trial


def trial_fields(spec: Interleave | None, point: dict[str, Any], label: str, model_name: str) -> dict[str, Any]:
    """The scenario and arm fields of one trial of an entry, given its scenario point: unchanged without
    ``measure.interleave``."""
    if spec is None:
        return point
    return {**point, "scenario": scenarios.interleaving(), "arm": label if spec.by == "label" else model_name}


def check_scenarios(spec: Interleave | None, names: list[str], where: str, source: str) -> None:
    """Interleaved units are timed one request at a time: an entry's scenarios must be single-stream."""
    if spec is None:
        return
    others = [n for n in names if n != scenarios.DEFAULT]
    if others:
        raise PlanError(f"{source}: measure.interleave: {where} runs {', '.join(others)}; interleaved rounds "
                        f"time one request at a time: use the {scenarios.DEFAULT} scenario (or no scenario key)")


def arm_set(spec: Interleave | None, arm: str) -> int:
    """The index of the ``interleave.sets`` list that holds ``arm`` (0 without sets)."""
    if spec is None or spec.sets is None:
        return 0
    return next((i for i, names in enumerate(spec.sets) if arm in names), -1)


def group_key(trial: Trial) -> Hashable:
    """What the trials of one unit share: everything but the arm (and what tells arms apart), and its set."""
    spec = trial.measure.interleave
    by = spec.by if spec else "label"
    model = ((trial.model.kind, tuple(trial.model.input_shape), trial.model.input_name,
              repr(trial.model.inputs)) if by == "model" else trial.model.key)
    label = () if by == "label" else (trial.label, trial.backend, repr(sorted(trial.options.items())), trial.slowdown)
    return (model, label, trial.batch_size, trial.dtype, trial.io, trial.device, tuple(sorted(trial.axes.items())),
            trial.math if trial.dtype == "fp32" else None, trial.seed, arm_set(spec, trial.arm))


def groups(trials: list[Trial]) -> list[list[Trial]]:
    """The interleaved trials in units (in the plan's order), each unit's trials in the plan's order."""
    out: dict[Hashable, list[Trial]] = {}
    for t in trials:
        if scenarios.get(t.scenario).interleaves:
            out.setdefault(group_key(t), []).append(t)
    return list(out.values())


def check(spec: Interleave | None, trials: list[Trial], source: str) -> None:
    """Every unit has two arms or more, each once, the base among them."""
    if spec is None:
        return
    where = f"{source}: measure.interleave"
    arms_seen = list(dict.fromkeys(t.arm for t in trials))
    _check_sets(spec, arms_seen, where)
    if spec.base is not None and spec.base not in arms_seen:
        what = "labels" if spec.by == "label" else "models"
        raise PlanError(f"{where}.base: no trial has the {spec.by} {spec.base!r}{did_you_mean(spec.base, arms_seen)}; "
                        f"the plan's {what}: {', '.join(arms_seen)}")
    for unit in groups(trials):
        names = [t.arm for t in unit]
        t = unit[0]
        case = f"{t.model.name if spec.by == 'label' else t.label} batch {t.batch_size} {t.dtype} {t.io}"
        if len(names) < 2:
            raise PlanError(f"{where}: the unit of {case} has one arm ({names[0]}); interleaving compares two "
                            f"or more {spec.by}s that share everything else: add another, or exclude it")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PlanError(f"{where}: the unit of {case} has the {spec.by} {', '.join(twice)} twice; "
                            f"give each arm its own {'label' if spec.by == 'label' else 'model name'}")
        if spec.base is not None and spec.base not in names and spec.sets is None:
            raise PlanError(f"{where}.base: the unit of {case} has no arm {spec.base!r} (its arms: "
                            f"{', '.join(names)}); exclude that unit or pick a base every unit has")


def _check_sets(spec: Interleave, arms: list[str], where: str) -> None:
    """Every name in ``sets`` is an arm of the plan, in one set only, and every arm is in a set."""
    if spec.sets is None:
        return
    seen: dict[str, int] = {}
    for i, names in enumerate(spec.sets):
        if len(names) < 2:
            raise PlanError(f"{where}.sets[{i}]: {names}: a set lists two {spec.by}s or more")
        for name in names:
            if name not in arms:
                raise PlanError(f"{where}.sets[{i}]: no trial has the {spec.by} {name!r}{did_you_mean(name, arms)}; "
                                f"the plan's: {', '.join(arms)}")
            if name in seen:
                raise PlanError(f"{where}.sets[{i}]: {name!r} is in sets[{seen[name]}] too; an arm is in one set")
            seen[name] = i
    missing = [a for a in arms if a not in seen]
    if missing:
        raise PlanError(f"{where}.sets: {', '.join(missing)} in no set; list every {spec.by} of the plan in one")


def _base_first(unit: list[Trial]) -> list[Trial]:
    """A unit's trials with its base first: ``interleave.base`` where the unit has it, else the first
    its set lists (without sets: the plan's first)."""
    spec = unit[0].measure.interleave
    names = [t.arm for t in unit]
    if spec is None:
        return unit
    base = spec.base if spec.base in names else None
    if base is None and spec.sets is not None:
        base = next((n for n in spec.sets[arm_set(spec, names[0])] if n in names), None)
    k = names.index(base) if base in names else 0
    return [unit[k], *unit[:k], *unit[k + 1:]]


def units(trials: list[Trial]) -> list[Trial]:
    """``trials`` as the run schedules them: each interleaved unit one trial (its base, carrying the
    others in ``arms``, with the sum of their timeouts), in the place of its first; the others as they are."""
    packed: dict[Hashable, list[Trial]] = {}
    order: list[Hashable | Trial] = []
    for t in trials:
        if not scenarios.get(t.scenario).interleaves:
            order.append(t)
            continue
        key = group_key(t)
        if key not in packed:
            packed[key] = []
            order.append(key)
        packed[key].append(t)
    out = []
    for item in order:
        if isinstance(item, Trial):
            out.append(item)
            continue
        first, *rest = _base_first(packed[item])
        timeouts = [t.timeout_s for t in packed[item]]
        timeout = None if any(x is None for x in timeouts) else sum(timeouts)  # type: ignore[misc]
        out.append(replace(first, arms=tuple(rest), timeout_s=timeout))
    return out
