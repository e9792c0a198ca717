"""Plan -> trials: a pure function, and stable trial ids.

A trial is a plain dict (it crosses the Ray boundary and becomes a row). Its id is a hash of
everything that decides what is measured: the model (kind, reference, input shape; an ONNX
file by its content), the backend and its resolved options, batch size, dtype, io, the plan's
device setting, the measurement settings and the seed. The plan's name and the entry's label
are not part of it (nor its budgets), so renaming either keeps the ids, and the same trial in two
plans matches. Nor is the ``parity`` section: it judges the output, it doesn't change what is measured.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from typing import Any

from orchestrator.errors import PlanError
from orchestrator.plan import Plan

ID_LEN = 16


@functools.cache
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trial_id(trial: dict[str, Any]) -> str:
    model = trial["model"]
    ident = {
        "model": [model["kind"], _file_digest(model["ref"]) if model["kind"] == "onnx" else model["ref"],
                  list(model["input_shape"])],
        **{k: trial[k] for k in ("backend", "options", "batch_size", "dtype", "io", "device", "measure", "seed")},
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:ID_LEN]


def _budgets(plan: Plan, trial: dict[str, Any], e: int, entry: Any) -> list[dict[str, Any]]:
    """The limits that apply to ``trial``, each with where the plan set it (not part of the id)."""
    found = [{"where": f"budgets[{i}]", **rule.limits()} for i, rule in enumerate(plan.budgets)
             if rule.matches(trial)]
    if entry.budgets is not None:
        found.append({"where": f"matrix.backends[{e}].budgets", **entry.budgets.limits()})
    return found


def expand(plan: Plan, source: str = "<plan>") -> list[dict[str, Any]]:
    """Every trial of the plan, in a stable order, exclusions applied."""
    trials = []
    m = plan.matrix
    measure = plan.measure.model_dump(mode="json")
    parity = plan.parity.model_dump(mode="json")
    for model, bs, dtype, (e, entry) in itertools.product(plan.models, m.batch_sizes, m.dtypes,
                                                           enumerate(m.backends)):
        for io in entry.io or m.io:
            trial = {
                "plan": plan.name,
                "model": model.as_dict(),
                "backend": entry.backend,
                "label": entry.label or entry.backend,
                "options": entry.options.model_dump(mode="json"),
                "batch_size": bs,
                "dtype": dtype,
                "io": io,
                "device": plan.device,
                "accelerator_type": plan.accelerator_type,
                "measure": measure,
                "parity": parity,
                "seed": plan.seed,
                # How to survive faults; not part of the id: they don't change what is measured.
                "timeout_s": entry.timeout_s if entry.timeout_s is not None else plan.timeout_s,
                "retries": entry.retries if entry.retries is not None else plan.retries,
            }
            if any(rule.matches(trial) for rule in m.exclude):
                continue
            trial["budgets"] = _budgets(plan, trial, e, entry)
            trial["trial_id"] = trial_id(trial)
            trials.append(trial)
    if not trials:
        raise PlanError(f"{source}: matrix: no trials left after `exclude`; loosen the exclude rules")
    seen: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t["trial_id"] in seen:
            raise PlanError(
                f"{source}: matrix.backends: entries '{seen[t['trial_id']]['label']}' and '{t['label']}' "
                "describe the same trial; remove one"
            )
        seen[t["trial_id"]] = t
    return trials
