"""The reference of an ``onnx:`` model (a user's own file, with no torch form): the same file on
ONNX Runtime's CPU provider with every graph optimisation off (``ORT_DISABLE_ALL``), so an optimiser
bug of the run under test is not shared by its reference. Its inputs are the trial's seeded inputs
in the types the file declares (fp32 where the file is fp32). Computed once per model, shape, seed
and node (the worker's ``ModelStore``), like the torch eager reference of other models, and used
for parity and for the stale-output check alike.

An fp16 file may hold ops the CPU provider has no fp16 kernel for: then there is no reference
(``NoReference``), the parity columns stay null and ``parity_unchecked`` says why; that is not a
failure of the trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from workers.contract import Trial

WHAT = "the ONNX file on ORT's CPU provider, optimisations off"


class NoReference(Exception):
    """No reference could be computed for this file (the reason is the message)."""


def reference(trial: Trial, store: Any, seed: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """The file's outputs for the trial's inputs (drawn with ``seed`` where given): one array for a
    one-output file, else every output by the file's names. Raises NoReference."""
    seed = trial.seed if seed is None else seed
    key = ("onnx-cpu", trial.dtype, trial.batch_size, seed, tuple(sorted(trial.axes.items())))
    found = store.reference(trial.model, key, lambda: _compute(trial, seed))
    if isinstance(found, NoReference):
        raise found
    return found


def _compute(trial: Trial, seed: int) -> Any:
    """The outputs, or the NoReference to raise (kept, so a file without one is tried once)."""
    import numpy as np
    import onnxruntime as ort

    from workers.models.build import make_inputs

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = _threads()  # the worker's share of the node, as torch's reference uses
    try:
        sess = ort.InferenceSession(trial.model.ref, sess_options=so, providers=["CPUExecutionProvider"])
        xs = make_inputs(trial.model, trial.batch_size, trial.dtype, "cpu", seed, trial.axes)
        inputs = sess.get_inputs()
        arrays = list(xs.values()) if not trial.model.inputs else [xs[i.name] for i in inputs]
        feeds = {i.name: _as_declared(x, i.type) for i, x in zip(inputs, arrays)}
        outs = sess.run(None, feeds)
    except Exception as exc:  # ORT's NOT_IMPLEMENTED for an op without a CPU kernel of that type
        return NoReference(f"no reference: ORT's CPU provider can't run this file ({str(exc).splitlines()[0][:300]})")
    arrays = [np.asarray(o, dtype=np.float32) for o in outs]
    if len(arrays) == 1:
        return arrays[0]
    return {o.name: a for o, a in zip(sess.get_outputs(), arrays)}


def _threads() -> int:
    """The worker's CPU share: torch's thread count where torch is loaded (the actor sets it), else 1."""
    import sys

    torch = sys.modules.get("torch")
    return max(1, torch.get_num_threads()) if torch is not None else 1


def _as_declared(x: Any, onnx_type: str) -> Any:
    """A torch tensor as the numpy array of the type the file declares for that input."""
    from workers.backends.ort_session import ORT_TYPES

    want = ORT_TYPES.get(onnx_type)
    arr = x.numpy()
    return arr.astype(want) if want is not None and want != str(arr.dtype) else arr
