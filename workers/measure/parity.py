"""Parity: is a trial's output the model's output, or did the backend compute something else?

Every trial's output is compared with a reference computed on the same device, from the same
weights and the same input: torch eager in fp32 (TF32 off) on the trial's seeded input in fp32.
The reference is computed once per (model, batch size, device) and cached in the worker's
``ModelStore`` (after the trial's runner is torn down, so it never shares the GPU with timing).

Errors are recorded in the row:

- ``parity_max_abs_err`` = max |y - ref|
- ``parity_max_rel_err`` = max |y - ref| / max |ref|: relative to the output's scale, because
  element-wise relative error is meaningless for logits near zero.

A trial fails (``status: parity_failed``, latency not published) when its output holds NaN/Inf,
has another shape than the reference, or when ``parity_max_rel_err`` is above the plan's
``parity.tolerance`` for its dtype (defaults in ``workers.contract.DEFAULT_TOLERANCE``).
Models with no torch form (``onnx:`` files) are held to the same file on ORT's CPU provider with
optimisations off (``workers.measure.onnxref``); where that can't run the file (an fp16 op without a
CPU kernel) the parity columns are null and ``parity_unchecked`` says why. Model-less backends have
no reference: their parity columns are null (not checked). Neither is a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where used: the driver imports this module for its defaults
    import numpy as np

from workers.contract import Trial
from workers.row import Row

REFERENCE = "torch-eager fp32"


class ParityFailure(Exception):
    """The trial ran but its output is wrong (NaN/Inf, or off the reference): no latency published.

    ``columns`` carries what was learnt (the errors, the environment) for the row.
    """

    def __init__(self, message: str, columns: Row | None = None) -> None:
        super().__init__(message)
        self.columns = columns or {}


def reference_name(trial: Trial, device: str) -> str:
    """What the reference of ``trial`` is, as the row's ``parity_reference`` says."""
    if trial.model.kind == "onnx":
        from workers.measure.onnxref import WHAT

        return WHAT
    return f"{REFERENCE} on {device}"


def reference_output(trial: Trial, device: str, store: Any) -> np.ndarray | dict[str, np.ndarray]:
    """Torch eager fp32 output for the trial's model, batch and inputs on ``device`` (TF32 off): one
    array for a one-output model, else every output by name (``workers.models.build.flat_outputs``).
    An ``onnx:`` model's is its file on ORT's CPU provider (``onnxref``; raises ``onnxref.NoReference``)."""
    if trial.model.kind == "onnx":
        from workers.measure import onnxref

        return onnxref.reference(trial, store)
    import torch

    from workers.models.build import call_model, host_outputs, make_inputs

    spec, bs, seed = trial.model, trial.batch_size, trial.seed

    def compute() -> np.ndarray | dict[str, np.ndarray]:
        model = store.torch_model(spec, device, "fp32")
        # The trial's inputs before floating ones are cast to the trial's dtype (the same seeded values),
        # so one reference serves every dtype; the cast's rounding is part of what the tolerance allows.
        xs = make_inputs(spec, bs, "fp32", device, seed, trial.axes)
        try:
            with _tf32_off(device), torch.inference_mode():
                y = call_model(spec, model, xs)
            return host_outputs(y)
        finally:
            del model
    key = (bs, seed, device, tuple(sorted(trial.axes.items()))) if trial.axes else (bs, seed, device)
    return store.reference(spec, key, compute)


def named(output: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A runner's output (one array, or several by name) as arrays by name; one is ``output``."""
    return dict(output) if isinstance(output, dict) else {"output": output}


@contextlib.contextmanager
def _tf32_off(device: str) -> Iterator[None]:
    """TF32 off for matmuls and convolutions, then the exact previous settings back.

    Restored through ``fp32_precision`` where torch has it (>= 2.9): writing the legacy
    ``allow_tf32`` flags back turns an unset precision ("none") into "ieee", a different global
    state, and Inductor's cache key includes it, so the next torch-compile would miss its cache.
    TF32 exists only on CUDA: on the CPU nothing is touched.
    """
    import torch

    if not str(device).startswith("cuda"):
        yield
        return
    b = torch.backends
    parts = (b.cuda.matmul, b.cudnn, getattr(b.cudnn, "conv", None), getattr(b.cudnn, "rnn", None))
    knobs = [o for o in parts if hasattr(o, "fp32_precision")]
    if knobs:
        prev = [o.fp32_precision for o in knobs]
        for o in knobs:
            o.fp32_precision = "ieee"
    else:
        legacy = b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32
        b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        if knobs:
            for o, v in zip(knobs, prev):
                o.fp32_precision = v
        else:
            b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = legacy


def compare(output: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max abs and max rel (to max |ref|) error of ``output`` against ``ref``."""
    import numpy as np

    y = np.asarray(output, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    abs_err = float(np.max(np.abs(y - r))) if y.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return {"parity_max_abs_err": abs_err, "parity_max_rel_err": abs_err / scale if scale > 0 else abs_err}


def nonfinite(output: np.ndarray) -> int:
    import numpy as np

    return int(output.size - np.isfinite(output).sum())


def check(trial: Trial, device: str, store: Any, outputs: list[np.ndarray | dict[str, np.ndarray]],
          modelless: bool) -> Row:
    """Parity columns for the trial's outputs (one per repeat; each one array, or several by name);
    raises ParityFailure when wrong. Every output is compared with the reference's output in the same
    place (the names are the reference's: an ONNX export may name them otherwise); the errors kept are
    the worst output's, and ``parity_worst_output`` names it."""
    several = any(isinstance(y, dict) and len(y) > 1 for y in outputs)
    for y in outputs:
        for name, arr in named(y).items():
            bad = nonfinite(arr)
            if bad:
                which = f"output '{name}'" if several else "output"
                raise ParityFailure(f"{which} has {bad} NaN/Inf values of {arr.size}; latency not published")
    cols: Row = {"parity_reference": None, "parity_max_abs_err": None,
                            "parity_max_rel_err": None, "parity_tolerance": None, "parity_worst_output": None,
                 "parity_unchecked": None}
    if not trial.parity.check or modelless:
        return cols
    from workers.measure.onnxref import NoReference

    tol = float(getattr(trial.parity.tolerance, trial.dtype))
    try:
        ref = named(reference_output(trial, device, store))
    except NoReference as exc:
        return {**cols, "parity_unchecked": str(exc)}
    what = reference_name(trial, device)
    cols.update(parity_reference=what, parity_tolerance=tol)
    worst: Row = {"parity_max_abs_err": 0.0, "parity_max_rel_err": 0.0, "parity_worst_output": None}
    for y in outputs:
        got = list(named(y).values())
        if len(got) != len(ref):
            raise ParityFailure(f"{len(got)} outputs; the reference has {len(ref)} ({', '.join(ref)})", cols)
        for (name, r), arr in zip(ref.items(), got):
            which = f"output '{name}'" if len(ref) > 1 else "output"
            if arr.shape != r.shape:
                raise ParityFailure(f"{which} shape {list(arr.shape)} differs from the reference's {list(r.shape)}",
                                    cols)
            err = compare(arr, r)
            if worst["parity_worst_output"] is None or err["parity_max_rel_err"] > worst["parity_max_rel_err"]:
                worst.update(err, parity_worst_output=name)
    cols.update(worst)
    if worst["parity_max_rel_err"] > tol:
        short = "ORT CPU" if trial.model.kind == "onnx" else REFERENCE
        which = f"output '{worst['parity_worst_output']}'" if len(ref) > 1 else "output"
        raise ParityFailure(
            f"{which} differs from the {short} reference: max |y - ref| / max |ref| = "
            f"{worst['parity_max_rel_err']:.3g} > tolerance {tol:g} for {trial.dtype}; latency not published",
            cols,
        )
    return cols
