"""Checks of a whole plan, made once its keys are valid: what no single key can say (a value
listed twice, a timeout shorter than the timing loop, an axis no model has, integers over 64 bits)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import PlanError
from orchestrator.plan import generation
from orchestrator.plan.messages import format_loc, yaml_repr
from orchestrator.plan.settings import list_settings, scenario_settings
from workers import scenarios

if TYPE_CHECKING:
    from orchestrator.plan.schema import Plan

def check_backend_forms(backends: Any, source: str) -> None:
    """Each matrix.backends entry is a backend's name or a mapping (its other errors come later)."""
    for i, b in enumerate(backends if isinstance(backends, list) else []):
        if not isinstance(b, dict):
            raise PlanError(f"{source}: matrix.backends[{i}]: expected a backend name or a mapping "
                            f"{{backend: NAME, ...}} (got {yaml_repr(b)})")


#: A plan's integers are stored as int64 (and passed to libraries that take C longs).
INT64 = (-(2**63), 2**63 - 1)


def check_int64(data: Any, source: str) -> None:
    """Every integer anywhere in the plan fits in 64 bits (the keys with a range of their own are
    checked by it; this catches the rest: exclude and budget values, hf overrides). Each list or
    mapping is looked at once, however many YAML aliases share it (an alias bomb stays small)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    seen: set[int] = set()
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict | list):
            if id(value) not in seen:
                seen.add(id(value))
                items = value.items() if isinstance(value, dict) else enumerate(value)
                stack += [(v, (*loc, k)) for k, v in items]
        elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise PlanError(f"{source}: {format_loc(loc)}: {value} is out of range: a plan's integers are "
                            f"64-bit (from {INT64[0]} to {INT64[1]})")


def check_repeats(plan: Plan, entries: list[Any], aliases: dict[str, str], source: str) -> None:
    """A value given twice in an axis (or a model listed twice) would measure the same trials twice."""
    m = plan.matrix
    axes: list[tuple[str, list[Any] | None]] = [
        ("matrix.batch_sizes", m.batch_sizes), ("matrix.dtypes", m.dtypes), ("matrix.io", m.io),
        ("matrix.math", m.math),
        ("matrix.scenarios", m.scenarios), ("matrix.concurrency", m.concurrency), ("matrix.rates", m.rates),
        ("matrix.prompt_lens", m.prompt_lens), ("matrix.new_tokens", m.new_tokens),
        *((f"matrix.{aliases[a]}" if a in aliases else f"matrix.axes.{a}", v) for a, v in m.axes.items()),
        *list_settings("scenario", plan.scenario),
    ]
    for i, e in enumerate(entries):
        axes += [(f"matrix.backends[{i}].io", e.io), (f"matrix.backends[{i}].math", e.math),
                 *list_settings(f"matrix.backends[{i}].scenario", e.scenario)]
    keys = [mod.key + mod.name for mod in plan.models]
    for where, values in [*axes, ("models", keys)]:
        seen: dict[Any, int] = {}
        for k, v in enumerate(values or []):
            first = seen.setdefault(v, k)
            if first != k:
                what = f"model '{plan.models[k].name}'" if where == "models" else yaml_repr(v)
                raise PlanError(f"{source}: {where}[{k}]: {what} is listed twice (also at {where}[{first}]); "
                                "give each value once")


def check_labels(entries: list[Any], source: str) -> None:
    """Each entry's label (its backend's name by default) names it alone in the results."""
    labels = [e.label or e.backend for e in entries]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise PlanError(
                f"{source}: matrix.backends[{i}]: label '{label}' is already used by "
                f"matrix.backends[{labels.index(label)}]; give each entry of one backend its own `label`"
            )


def check_scenarios(plan: Plan, entries: list[Any], source: str) -> None:
    """Every entry's scenario settings are checked by their scenarios (``scenario_settings``), and
    the plan's rates are for a scenario some entry runs."""
    names = {n for i, e in enumerate(entries) for n in scenario_settings(plan, e, i, source)["name"]}
    plan_rates = "matrix.rates" if plan.matrix.rates else "scenario.rates" if plan.scenario.rates else None
    if plan_rates and not names & set(scenarios.using("rate")):
        raise PlanError(f"{source}: {plan_rates}: rates are for the {' and '.join(scenarios.using('rate'))} scenario, "
                        "which no trial of this plan runs")


def check_timeouts(plan: Plan, entries: list[Any], source: str) -> None:
    """A trial's timeout must leave room for its timing loop, or every trial would time out."""
    limit = plan.measure.max_time_s
    where = [("timeout_s", plan.timeout_s)]
    where += [(f"matrix.backends[{i}].timeout_s", e.timeout_s) for i, e in enumerate(entries) if e.timeout_s]
    for key, value in where:
        if value <= limit:
            raise PlanError(f"{source}: {key}: {value:g} s leaves no time to measure: it must be larger "
                            f"than measure.max_time_s ({limit:g} s), plus setup time")


def axes_shorthand(matrix: dict[Any, Any], source: str) -> dict[Any, Any]:
    """``matrix.<axis>_lens: [...]`` is short for ``matrix.axes: {<axis>: [...]}`` (``seq_lens`` fills ``seq``);
    ``matrix`` as the YAML has it (its keys may be any scalar: the schema refuses those not a key)."""
    short = [k for k in matrix if isinstance(k, str) and k.endswith("_lens") and len(k) > 5
             and k not in generation.MATRIX_KEYS]
    if not short:
        return matrix
    matrix = dict(matrix)
    axes = dict(matrix.get("axes") or {}) if isinstance(matrix.get("axes") or {}, dict) else matrix.get("axes")
    for k in short:
        if isinstance(axes, dict):
            if k[:-5] in axes:
                raise PlanError(f"{source}: matrix.{k}: axis '{k[:-5]}' is also in matrix.axes; give it once")
            axes[k[:-5]] = matrix.pop(k)
    matrix["axes"] = axes
    return matrix


def check_axes(plan: Plan, source: str, aliases: dict[str, str] | None = None) -> None:
    """Every named axis of every model has a value (the model's axes or the matrix's), and every
    value given names an axis some model has (``aliases``: the axes given by a ``<axis>_lens`` key)."""
    swept = plan.matrix.axes
    if "batch" in swept:
        raise PlanError(f"{source}: matrix.axes.batch: the batch axis's values are matrix.batch_sizes")
    used: set[str] = set()
    for i, m in enumerate(plan.models):
        names = m.axis_names()
        used.update(names)
        for a in m.axes:
            if a not in names:
                raise PlanError(f"{source}: models[{i}].axes.{a}: model '{m.name}' has no axis '{a}' "
                                f"(its axes: {', '.join(['batch', *names])})")
        for inp in m.inputs:
            for k, d in enumerate(inp.shape):
                if isinstance(d, str) and d != "batch" and d not in m.axes and d not in swept:
                    hint = (f"; or map the file's dim to a plan axis with axes_map: {{{d}: <axis>}}"
                            if m.kind == "onnx" else "")
                    raise PlanError(f"{source}: models[{i}]: input '{inp.name}' dim {k} '{d}' has no value: set it "
                                    f"with axes: {{{d}: N}} on the model or sweep it with matrix.axes: "
                                    f"{{{d}: [...]}}{hint}")
    for a in swept:
        if a not in used:
            key = (aliases or {}).get(a, f"axes.{a}")
            raise PlanError(f"{source}: matrix.{key}: no model has an axis named '{a}'"
                            + (f" (their axes: {', '.join(sorted(used))})" if used else ""))


def check_hf_axes(plan: Plan, source: str) -> None:
    """An ``hf:`` text model takes sequences no longer than its position table."""
    from workers.models import hf

    for i, m in enumerate(plan.models):
        if m.kind != "hf":
            continue
        found = hf.arch_of(m.ref)
        if found is None:
            continue
        arch_name, arch, local = found
        longest = hf.settings(arch, local, m.overrides).get("max_seq")
        seqs = [m.axes["seq"]] if "seq" in m.axes else list(plan.matrix.axes.get("seq", []))
        too_long = [s for s in seqs if longest is not None and s > longest]
        if too_long:
            raise PlanError(f"{source}: models[{i}]: hf:{m.ref} takes sequences of at most {longest} tokens "
                            f"({arch.max_seq_key}); seq {too_long[0]} is longer")
