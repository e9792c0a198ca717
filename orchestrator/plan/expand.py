"""Plan -> trials: a pure function, and stable trial ids.

A trial is a ``workers.contract.Trial`` (it crosses the Ray boundary as it is). Its id hashes
everything that decides what is measured (``workers.contract.trial_id``); an ONNX file counts by its
content. The plan's name and the entry's label are not part of it (nor its budgets), so renaming
either keeps the ids, and the same trial in two plans matches. Nor is the ``parity`` section: it
judges the output, it doesn't change what is measured.

It reads a plan ``orchestrator.plan.load`` has validated and checked (the scenario settings
included), and nothing of this package imports it back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
from typing import Any, TypedDict

from orchestrator.errors import PlanError
from orchestrator.plan import generation, interleave
from orchestrator.plan.schema import EXCLUDE_KEYS, Plan, exclude_value
from orchestrator.plan.settings import merged_settings
from workers import scenarios
from workers.backends import math_before
from workers.config import did_you_mean
from workers.contract import BudgetLimits, ModelSpec, Trial, trial_id
from workers.measure import mathmode


@functools.cache
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_digest(model: ModelSpec) -> str:
    """What stands for the model in its trials' ids: an ONNX file's content, else its reference."""
    return _file_digest(model.ref) if model.kind == "onnx" else model.ref


def _budgets(plan: Plan, trial: Trial, e: int, entry: Any) -> tuple[BudgetLimits, ...]:
    """The limits that apply to ``trial``, each with where the plan set it (not part of the id)."""
    found: list[BudgetLimits] = [{"where": f"budgets[{i}]", **rule.limits()} for i, rule in enumerate(plan.budgets)
             if rule.matches(trial)]
    if entry.budgets is not None:
        found.append({"where": f"matrix.backends[{e}].budgets", **entry.budgets.limits()})
    return tuple(found)


def axis_points(model: ModelSpec, swept: dict[str, list[int]]) -> list[dict[str, int]]:
    """The values of ``model``'s named axes, one dict per trial: the model's own ``axes`` fixed, the
    matrix's swept (an axis the model doesn't have doesn't multiply its trials). ``[{}]`` without axes."""
    names = model.axis_names()
    choices = [[model.axes[a]] if a in model.axes else swept[a] for a in names]
    return [dict(zip(names, values)) for values in itertools.product(*choices)]


class ScenarioPoint(TypedDict, total=False):
    """A trial's scenario fields (``Trial``'s), as one point of an entry's scenario settings."""

    scenario: str
    concurrency: int
    rate: float
    arrival: str
    latency_bound_ms: float
    tpot_bound_ms: float
    min_duration_s: float
    min_requests: int
    confident: bool


def _used(settings: scenarios.Settings, name: str) -> list[str]:
    """The trial fields scenario ``name`` takes that the settings give a value."""
    return [f for f in scenarios.get(name).fields if settings[scenarios.PARAMS[f].setting] is not None]


def _values(settings: scenarios.Settings, field: str) -> list[Any]:
    v = settings[scenarios.PARAMS[field].setting]
    return v if isinstance(v, list) else [v]


def scenario_points(settings: scenarios.Settings) -> list[ScenarioPoint]:
    """The scenario fields of each trial of one backend entry: per scenario name, the product of the
    parameters it uses (``Scenario.fields``); the others stay at their defaults (the default scenario: none)."""
    points = []
    for name in settings["name"]:
        used = _used(settings, name)
        points += [{"scenario": name, **dict(zip(used, combo))}
                   for combo in itertools.product(*(_values(settings, f) for f in used))]
    return points


def math_axis(matrix: Any, entry: Any, dtype: str) -> list[str]:
    """The math modes of an entry's trials of ``dtype``: the entry's or the matrix's for fp32, the
    default alone for fp16/bf16 (TF32 is about fp32 arithmetic)."""
    return (entry.math or matrix.math) if dtype == "fp32" else [mathmode.DEFAULT]


def count_trials(plan: Plan) -> int:
    """How many trials the plan expands to before ``exclude``: the product of its axes' lengths,
    counted without expanding them (what ``expand`` would build, so a huge plan is refused at once)."""
    m = plan.matrix
    per_entry = gen_entry = 0  # trials per model point, batch size: every dtype and its math modes
    for entry in m.backends:
        settings = merged_settings(plan, entry)
        n_points = [(name, math.prod(len(_values(settings, f)) for f in _used(settings, name)))
                    for name in settings["name"]]
        modes = sum(len(math_axis(m, entry, d)) for d in m.dtypes)
        per_entry += len(entry.io or m.io) * sum(n for _, n in n_points) * modes
        # a generation model: on the device, the generation scenario once and the load scenarios' points
        loads = sum(n for name, n in n_points if scenarios.get(name).uses_lanes)
        gen_entry += (loads + (loads < sum(n for _, n in n_points))) * modes
    total = 0
    for model in plan.models:
        points = math.prod(1 if a in model.axes else len(m.axes.get(a, [])) for a in model.axis_names())
        gen = generation.points(model, m)
        total += points * len(gen) * (gen_entry if gen != [{}] else per_entry)
    return total * len(m.batch_sizes)


def check_size(plan: Plan, source: str = "<plan>") -> int:
    """The plan's trial count (``count_trials``); a PlanError when it is over the plan's ``max_trials``."""
    n = count_trials(plan)
    if n > plan.max_trials:
        raise PlanError(f"{source}: matrix: the plan expands to {n:,} trials (before exclude), more than "
                        f"max_trials ({plan.max_trials:,}); sweep fewer values, or raise max_trials in the plan")
    return n


def expand(plan: Plan, source: str = "<plan>") -> list[Trial]:
    """Every trial of the plan, in a stable order, exclusions applied. A plan of more than its
    ``max_trials`` is refused before any is built."""
    check_size(plan, source)
    trials, candidates = [], []
    m = plan.matrix
    points = [(model, axes, gen) for model in plan.models for axes in axis_points(model, m.axes)
              for gen in generation.points(model, m)]
    entry_scenarios = [scenario_points(merged_settings(plan, entry)) for entry in m.backends]
    options = [entry.options.model_dump(mode="json") for entry in m.backends]  # once per entry, not per trial
    for (model, axes, gen), bs, dtype, (e, entry) in itertools.product(points, m.batch_sizes, m.dtypes,
                                                                        enumerate(m.backends)):
        ios_scenarios = generation.trial_points(model, entry.io or m.io, entry_scenarios[e])
        for (io, point), mode in itertools.product(ios_scenarios, math_axis(m, entry, dtype)):
            interleave.check_scenarios(plan.measure.interleave, [point["scenario"]], f"matrix.backends[{e}]", source)
            scenario = interleave.trial_fields(plan.measure.interleave, point, entry.label or entry.backend, model.name)
            spec = dict(
                plan=plan.name,
                model=model,
                backend=entry.backend,
                label=entry.label or entry.backend,
                options=dict(options[e]),
                batch_size=bs,
                dtype=dtype,
                io=io,
                math=mode,
                device=plan.device,
                accelerator_type=plan.accelerator_type,
                measure=plan.measure,
                parity=plan.parity,
                seed=plan.seed,
                axes=axes,
                timeout_s=entry.timeout_s if entry.timeout_s is not None else plan.timeout_s,
                retries=entry.retries if entry.retries is not None else plan.retries,
                profile=entry.profile,
                slowdown=entry.slowdown,
                **scenario,
                **gen,
            )
            trial = Trial(**spec)
            candidates.append(trial)
            if any(rule.matches(trial) for rule in m.exclude):
                continue
            # built again with both filled in (trial_id doesn't hash budgets): dataclasses.replace took
            # twice as long, a second for 100,000 trials
            trials.append(Trial(**spec, budgets=_budgets(plan, trial, e, entry),
                                trial_id=trial_id(trial, math_before, model_digest)))
    _check_exclude(m.exclude, candidates, source)
    if not trials:
        raise PlanError(f"{source}: matrix: no trials left after `exclude`; loosen the exclude rules")
    interleave.check(plan.measure.interleave, trials, source)
    _check_one_at_a_time(trials, source)
    seen: dict[str, Trial] = {}
    for t in trials:
        if t.trial_id in seen:
            raise PlanError(
                f"{source}: matrix.backends: entries '{seen[t.trial_id].label}' and '{t.label}' "
                "describe the same trial; remove one"
            )
        seen[t.trial_id] = t
    _check_onnx_runtime(plan, trials, source)
    return trials


def _check_one_at_a_time(trials: list[Trial], source: str) -> None:
    """A measure key that times requests one at a time, set in a plan none of whose trials does
    (``scenarios.one_at_a_time``): refused at the key rather than run into a skipped row per trial."""
    unmet = [scenarios.one_at_a_time(t) for t in trials]
    for key in ("process_repeats", "input_pool"):
        if all(key in u for u in unmet):
            named = sorted({t.scenario for t in trials})
            raise PlanError(f"{source}: measure.{key}: {getattr(trials[0].measure, key)} applies to requests "
                            f"timed one at a time (scenario {scenarios.DEFAULT}); every trial of this plan is of "
                            f"scenario {', '.join(named)}: leave it at 1")


def _check_exclude(rules: list[Any], candidates: list[Trial], source: str) -> None:
    """Every value an exclude rule names must be one some trial of the plan has: a rule with a
    misspelt model or label otherwise matches nothing, and the trials it was meant to leave out run."""
    axis_names = sorted({name for t in candidates for name in t.axes})
    for i, rule in enumerate(rules):
        checks = []  # (where in the rule, the values it names, the values the plan's trials have)
        for key in EXCLUDE_KEYS:
            want = getattr(rule, key)
            if want is None:
                continue
            if key != "axes":
                checks.append((key, want, {exclude_value(t, key) for t in candidates}))
                continue
            for name, values in want.items():
                if name not in axis_names:
                    listed = f"the plan's axes: {', '.join(axis_names)}" if axis_names else "the plan has none"
                    raise PlanError(f"{source}: matrix.exclude[{i}].axes: no trial has an axis '{name}'"
                                    f"{did_you_mean(name, axis_names)}; {listed}")
                checks.append((f"axes.{name}", values, {t.axes[name] for t in candidates if name in t.axes}))
        for where, values, have in checks:
            for value in values if isinstance(values, list) else [values]:
                if value not in have:
                    what = _PLURAL.get(where, f"values of {where.removeprefix('axes.')}")
                    hint = did_you_mean(value, have) if isinstance(value, str) else ""
                    raise PlanError(f"{source}: matrix.exclude[{i}].{where}: no trial has {value!r}{hint}; "
                                    f"the plan's {what}: {', '.join(map(str, sorted(have, key=str)))}")


_PLURAL = {"model": "models", "backend": "backends", "label": "labels", "batch_size": "batch sizes",
           "dtype": "dtypes", "io": "io values", "scenario": "scenarios", "concurrency": "concurrencies",
           "rate": "rates", "math": "fp32 math modes"}


def _check_onnx_runtime(plan: Plan, trials: list[Trial], source: str) -> None:
    """An ``onnx:`` file that runs on ``ort`` must be one the installed onnxruntime can read."""
    if any(m.kind == "onnx" for m in plan.models):
        from orchestrator.plan.onnxfile import check_runtime

        check_runtime(trials, list(plan.models), source)


def with_profiles(trials: list[Trial], labels: list[str] | tuple[str, ...], source: str) -> list[Trial]:
    """``trials`` with ``profile`` on for every backend label in ``labels`` (``infer-orch run --profile``);
    a label no trial has is a PlanError naming the labels there are. Ids don't change."""
    if not labels:
        return trials
    have = sorted({t.label for t in trials})
    missing = [x for x in dict.fromkeys(labels) if x not in have]
    if missing:
        raise PlanError(f"{source}: --profile {', '.join(missing)}: no matrix.backends entry has "
                        f"{'that label' if len(missing) == 1 else 'these labels'}; its labels are {', '.join(have)}")
    return [dataclasses.replace(t, profile=True) if t.label in labels else t for t in trials]
