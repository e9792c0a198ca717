"""What a trial's row holds before and around what it measured: the columns that come from the trial
alone (``spec_columns``), the row of a trial that ended before it measured (``failure_row``), and the
check that a row holds only the schema's columns (``checked_row``). The worker builds its rows with
them, the driver the row of a trial whose worker died."""

from __future__ import annotations

import json
from typing import Any

from workers import scenarios
from workers.contract import BATCH_AXIS, Status, Trial
from workers.messages import strip_escapes
from workers.row import InputsItem, Row


def spec_columns(trial: Trial) -> Row:
    """The row columns that come from the trial alone: what the driver knows (every row has them,
    failed ones too)."""
    m = trial.model
    return {
        "trial_id": trial.trial_id,
        "plan": trial.plan,
        "model": m.name,
        "model_source": f"{m.kind}:{m.ref}",
        "input_shape": _input_shape_column(trial),
        "inputs": fed_inputs(trial),
        "axes": json.dumps(trial.axes, sort_keys=True) if trial.axes else None,
        "backend": trial.backend,
        "label": trial.label,
        "options": json.dumps(trial.options, sort_keys=True),
        "batch_size": trial.batch_size,
        "dtype": trial.dtype,
        "io": trial.io,
        "math": trial.math if trial.dtype == "fp32" else None,
        **scenario_columns(trial),
        "prompt_len": trial.prompt_len or None,
        "new_tokens": trial.new_tokens or None,
        "arm": trial.arm or None,
        "slowdown": trial.slowdown or None,
    }


def scenario_columns(trial: Trial) -> Row:
    """The row's scenario columns: the scenario's name always, its parameters where it uses them."""
    used = scenarios.get(trial.scenario).fields
    return {"scenario": trial.scenario,
            "concurrency": trial.concurrency if "concurrency" in used else None,
            "target_rate": trial.rate if "rate" in used else None,
            "arrival": trial.arrival if "arrival" in used else None,
            "latency_bound_ms": trial.latency_bound_ms if "latency_bound_ms" in used else None,
            "tpot_bound_ms": trial.tpot_bound_ms if "tpot_bound_ms" in used else None,
            "confident": trial.confident if "confident" in used else None}


def fed_inputs(trial: Trial) -> list[InputsItem]:
    """Every input the trial feeds: name, dtype and full shape (the batch axis included)."""
    m = trial.model
    if m.kind == "hf-causal":  # a generation's prompt: token ids [batch, prompt_len]
        return [{"name": "input_ids", "dtype": "int64", "shape": [trial.batch_size, trial.prompt_len]}]
    if not m.inputs:
        dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(trial.dtype, trial.dtype)
        return [{"name": m.input_name, "dtype": dtype, "shape": [trial.batch_size, *m.input_shape]}]
    return [{"name": i.name, "dtype": i.fed_dtype(trial.dtype) if trial.dtype in ("fp32", "fp16", "bf16")
             else i.dtype, "shape": i.resolved_shape(trial.batch_size, trial.axes)} for i in m.inputs]


def _input_shape_column(trial: Trial) -> list[int] | None:
    """The per-sample shape of a one-input model (its batch axis left out); null with several inputs."""
    m = trial.model
    if not m.inputs:
        return list(m.input_shape)
    if len(m.inputs) != 1:
        return None
    (i,) = m.inputs
    return [n for d, n in zip(i.shape, i.resolved_shape(trial.batch_size, trial.axes)) if d != BATCH_AXIS]


def failure_row(trial: Trial, status: Status, error: str, **columns: Any) -> Row:
    """The row of a trial that ended without a measurement (its worker died, it timed out, ...)."""
    return checked_row({**spec_columns(trial), **columns, "status": str(status), "error": error})


def unknown_columns(row: Row) -> list[str]:
    from workers.schema import NAMES  # pyarrow: only where rows are made, not where plans are checked

    return sorted(set(row) - NAMES)


def checked_row(row: Row) -> Row:
    """``row`` if every key is a schema column; else the row without the strangers, ``failed``,
    its error naming them (a runner that reports a column the schema lacks fails its own trial).
    Either way its messages are plain text (:func:`strip_escapes`)."""
    bad = unknown_columns(strip_escapes(row))
    if not bad:
        return row
    kept = {k: v for k, v in row.items() if k not in bad}
    was = kept.get("status")
    note = f" (it had ended {was}: {kept.get('error')})" if was not in (None, Status.OK) else ""
    kept.update(status=str(Status.FAILED),
                error=f"the trial reported columns the result schema lacks: {', '.join(bad)}; add them to "
                      f"workers/schema.py or drop them{note}")
    return kept
