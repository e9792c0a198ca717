"""A build-ahead task: what a trial needs built that needs no GPU, built on a spare CPU of its node.

The driver (``orchestrator/run/ahead.py``) runs :func:`build` as a Ray task on the node where the
trial will run, with ``CUDA_VISIBLE_DEVICES=""`` (Ray no longer hides GPUs from tasks that ask for
none, and a CUDA call here would create a context on a GPU being timed), before a worker reaches
the trial. The one exception is a ``torch-compile`` trial on a GPU (``workers.backends.compile_ahead``):
Inductor's CUDA code generation needs the GPU's properties and loads the kernels it compiled, so its
task runs with ``BUILD_GPU`` set to the index of one of the node's GPUs and sees that GPU alone: a
CUDA context there, no weights, no kernel launched.
It builds through the backend's ``Runner.build_ahead``, into the node's content-keyed cache, under
the artifact's lock (``workers.models.artifacts``): the worker that reaches the trial
finds it there, or waits for this build, and never builds it again. A build that fails here is
left to the worker, whose row then says what went wrong; so is one on a cache disk short of space.
"""

from __future__ import annotations

import os
import time

from workers.backends import get
from workers.backends.compile_ahead import needs_gpu
from workers.contract import Trial
from workers.models.artifacts import room_for
from workers.models.build import ModelStore, cache_dir
from workers.models.shipped import Shipped

#: A task that builds a GPU trial's compile: the index, among the GPUs its node shows it, of the one it uses.
BUILD_GPU = "INFER_ORCH_BUILD_GPU"

#: This process's built models (a task process builds trial after trial of one model, as a worker does).
_STORES: dict[int, ModelStore] = {}


def build(trials: list[Trial], seed: int, shipped: Shipped | None = None) -> tuple[float, str | None]:
    """Build the artifacts of ``trials``, in order; (seconds it took, why one was not built, or None)."""
    t0 = time.perf_counter()
    gpu = os.environ.get(BUILD_GPU)
    if gpu is not None:
        one_gpu(int(gpu))
    elif os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        return 0.0, "a build-ahead task must run with CUDA_VISIBLE_DEVICES='' (no GPU) or BUILD_GPU set"
    errors = []
    for trial in trials:
        if gpu is None and needs_gpu(trial):
            errors.append(f"{trial.label}: its compile needs a GPU visible, and this task has none")
            continue
        if not room_for(cache_dir()):
            return time.perf_counter() - t0, f"less than the free space a build needs on the cache disk ({cache_dir()})"
        try:
            from workers.actor import localised

            trial = localised(trial, shipped or {})
            get(trial.backend).build_ahead(trial, _STORES.setdefault(seed, ModelStore(seed)))
        except Exception as exc:  # the worker builds it, and its row tells
            errors.append(f"{type(exc).__name__}: {exc}")
    return time.perf_counter() - t0, "; ".join(errors) or None


def one_gpu(index: int) -> None:
    """Show this process the ``index``-th of the GPUs it sees (its node's ``CUDA_VISIBLE_DEVICES``, else
    all), and no other: as a worker's GPU is its ``cuda:0``, a compile's device is the same. Before any
    CUDA call of the process (Ray gives a task's runtime environment processes of its own)."""
    ids = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)] if ids else str(index)
