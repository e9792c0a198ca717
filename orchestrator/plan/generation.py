"""Generation trials in a plan: ``hf-causal`` models, the ``prompt_lens`` and ``new_tokens`` axes, the
generate scenario and the backends that generate. Validation reads sizes from
``workers.generation.models`` (a table and config files: no torch, no transformers)::

    models:
      - hf-causal: llama             # gpt2 | llama | qwen2 | mistral | a save_pretrained folder
        overrides: {hidden_size: 2048, num_hidden_layers: 16}
    matrix:
      batch_sizes: [1, 8]
      prompt_lens: [128, 1024]       # prompt tokens per sequence
      new_tokens: [128]              # tokens generated after it (greedy, end-of-sequence masked)
      backends: [torch-eager, torch-cudagraph, torch-compile, ort,
                 ort-genai, {backend: ort-genai, label: ort-genai-graph, options: {cuda_graph: true}}]

An ``hf-causal`` model's trials run the generation scenario (``generate``, one generation at a time)
without the plan naming it; where the plan names load scenarios (those with several requests in
flight: offline, server, find-peak), its trials run those too, k generations in flight::

    scenario: {name: [offline, server], concurrency: [4], rates: [20]}

A request the model can't serve (prompt + new tokens over its positions, no new tokens), a model
that does not generate and a generation path that can't keep several generations in flight asked
to are refused here, each at the key that says so.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from orchestrator.errors import PlanError
from orchestrator.plan.causal import KIND, message_of
from workers.generation.models import CAUSAL, GenerationInputError, check_request, shape_of

if TYPE_CHECKING:
    from orchestrator.plan.schema import Matrix, Plan
    from workers.contract import ModelSpec

#: the matrix keys of generation trials (not named axes: ``prompt_lens`` is not ``<axis>_lens``)
MATRIX_KEYS = ("prompt_lens", "new_tokens")
_FORMS = ", ".join(CAUSAL) + " or a save_pretrained folder of one"


def points(model: ModelSpec, matrix: Matrix) -> list[dict[str, int]]:
    """The generation fields of ``model``'s trials: prompt_len x new_tokens for an hf-causal model,
    ``[{}]`` (nothing added, nothing multiplied) for any other."""
    if model.kind != KIND:
        return [{}]
    return [{"prompt_len": p, "new_tokens": n} for p in matrix.prompt_lens or [] for n in matrix.new_tokens or []]


def generation_scenario() -> str:
    """The scenario of generation trials: the one that drives its own runners (``Scenario.own_runners``)."""
    from workers import scenarios

    return next(n for n in scenarios.names() if scenarios.get(n).own_runners)


def scenario_uses_lanes(name: str) -> bool:
    """Whether scenario ``name`` keeps several requests in flight (a load scenario)."""
    from workers import scenarios

    return scenarios.get(name).uses_lanes


def scenario_points(points: list[Any]) -> list[Any]:
    """The scenario points of a generation model's trials on one backend entry, from the entry's: each
    point of a load scenario (several requests in flight) as it is; the generation scenario once in
    place of the others (one request at a time: the default), first."""
    loads = [p for p in points if scenario_uses_lanes(p["scenario"])]
    return ([{"scenario": generation_scenario()}] if len(loads) < len(points) else []) + loads


def trial_points(model: ModelSpec, io: list[str], scenarios: list[Any]) -> list[tuple[str, Any]]:
    """(io, scenario point) of each trial of ``model`` on one backend entry: a generation model runs on
    the device, the generation scenario and the entry's load scenarios (``scenario_points``); any
    other model, every io and scenario point of the entry."""
    if model.kind != KIND:
        return list(itertools.product(io, scenarios))
    return [("device", p) for p in scenario_points(scenarios)]


def check(plan: Plan, entries: list[Any], source: str) -> Plan:
    """The plan's generation trials checked (PlanError at the key); the plan, as it is. ``hf-causal`` models generate
    (``trial_points``): one at a time, and under the load scenarios the plan names, each entry with no
    more generations in flight than its path keeps; a plan of them alone is held to more: each backend
    entry must generate, on the device, with no one-request scenario but the generation one named."""
    from orchestrator.plan.settings import scenario_settings

    gen = generation_scenario()
    m = plan.matrix
    causal = [i for i, x in enumerate(plan.models) if x.kind == KIND]
    others = [i for i, x in enumerate(plan.models) if x.kind != KIND]
    names = [scenario_settings(plan, e, i, source)["name"] for i, e in enumerate(entries)]
    named = [i for i, n in enumerate(names) if gen in n]
    if named and others:
        x = plan.models[others[0]]
        base = " (hf: is the base model, one forward pass without the LM head)" if x.kind == "hf" else ""
        raise PlanError(f"{source}: models[{others[0]}]: {x.kind}:{x.name} is not a decoder for generation trials"
                        f"{base}; write {KIND}: <{'|'.join(CAUSAL)}> or a save_pretrained folder (its trials "
                        f"generate without naming the {gen} scenario)")
    if not causal:
        given = [f"matrix.{key}" for key in MATRIX_KEYS if getattr(m, key) is not None]
        given += ["scenario.tpot_bound_ms"] if plan.scenario.tpot_bound_ms is not None else []
        given += [f"matrix.backends[{i}].scenario.tpot_bound_ms" for i, e in enumerate(entries)
                  if e.scenario is not None and e.scenario.tpot_bound_ms is not None]
        if given:
            raise PlanError(f"{source}: {given[0]}: for generation trials; no model of this plan is an "
                            f"{KIND} decoder ({_FORMS})")
        return plan
    if not others:
        _check_entries(plan, entries, names, gen, source)
    for i, (e, n) in enumerate(zip(entries, names)):
        if any(scenario_uses_lanes(s) for s in n):
            _check_in_flight(plan, e, i, source)
    for key in MATRIX_KEYS:
        if getattr(m, key) is None:
            raise PlanError(f"{source}: matrix.{key}: required for generation trials, e.g. {key}: [128]")
    _check_requests(plan, causal, source)
    return plan


def _check_entries(plan: Plan, entries: list[Any], names: list[list[str]], gen: str, source: str) -> None:
    """A plan of generation models alone: every entry generates, on the device, in the generation
    scenario or the load scenarios, with as many generations in flight as its path can keep."""
    from workers import scenarios

    explicit = not _names_no_scenario(plan, entries)
    loads = [n for n in scenarios.names() if scenario_uses_lanes(n)]
    for i, (e, n) in enumerate(zip(entries, names)):
        other = [s for s in n if s != gen and s not in loads]
        if explicit and other:
            raise PlanError(f"{source}: matrix.backends[{i}]: {KIND} models run the {gen} scenario (one "
                            f"generation at a time) and the load scenarios ({', '.join(loads)}); {other[0]} is "
                            "not built for generation")
        _check_backend(e, i, source)
        if "host" in (e.io or plan.matrix.io):
            where = f"matrix.backends[{i}].io" if e.io else "matrix.io"
            raise PlanError(f"{source}: {where}: generation trials keep the prompt and the tokens on the device "
                            "(io: device); io: host is for single-pass trials")


def _names_no_scenario(plan: Plan, entries: list[Any]) -> bool:
    return (plan.scenario.name is None and plan.matrix.scenarios is None
            and all(e.scenario is None or e.scenario.name is None for e in entries))


def _check_backend(entry: Any, i: int, source: str) -> None:
    from workers.backends import get, registry

    runner = get(entry.backend)
    if runner.generation_path(entry.options.model_dump(mode="json")) is None:
        can = sorted(n for n, r in registry().items() if r.generation is not None)
        raise PlanError(f"{source}: matrix.backends[{i}]: backend {entry.backend} runs no generation; these do: "
                        f"{', '.join(can)}")
    if KIND not in runner.model_kinds and entry.options.model_fields_set:
        key = sorted(entry.options.model_fields_set)[0]
        raise PlanError(f"{source}: matrix.backends[{i}].options.{key}: a generation trial drives {entry.backend} "
                        "its own way (docs/measuring.md#generation) and takes none of its options")


def _check_in_flight(plan: Plan, entry: Any, i: int, source: str) -> None:
    """An entry's generation path keeps as many generations in flight as its load scenarios ask."""
    from orchestrator.plan.settings import merged_settings
    from workers.backends import get
    from workers.generation.measure import RUNNERS

    try:
        path = get(entry.backend).generation_path(entry.options.model_dump(mode="json"))
    except KeyError:  # an unknown backend: refused at its own key
        return
    reason = RUNNERS[path].one_at_a_time if path in RUNNERS else None
    most = max(merged_settings(plan, entry)["concurrency"] or [1])
    if reason and most > 1:
        raise PlanError(f"{source}: matrix.backends[{i}]: concurrency {most}: {entry.backend}'s generation "
                        f"path can't keep several generations in flight ({reason})")


def _check_requests(plan: Plan, causal: list[int], source: str) -> None:
    """Every (batch, prompt, new tokens) the matrix makes fits every hf-causal model."""
    m = plan.matrix
    for i in causal:
        model = plan.models[i]
        try:
            shape = shape_of(model.ref, model.overrides)
        except GenerationInputError as exc:
            raise PlanError(f"{source}: models[{i}].{exc.key}: {message_of(exc)}") from None
        for b, bs in enumerate(m.batch_sizes):
            for p, prompt in enumerate(m.prompt_lens or []):
                for n, new in enumerate(m.new_tokens or []):
                    try:
                        check_request(shape, bs, prompt, new)
                    except GenerationInputError as exc:
                        where = {"new_tokens": f"new_tokens[{n}]", "prompt_lens": f"prompt_lens[{p}]",
                                 "batch_sizes": f"batch_sizes[{b}]"}.get(exc.key, exc.key)
                        raise PlanError(f"{source}: matrix.{where}: {message_of(exc)} (models[{i}], "
                                        f"{KIND}:{model.name})") from None


