"""torch.compile's CUDA graphs called from more than one host thread of a worker, on a GPU.

A worker runs single requests on its own thread and load scenarios on lane threads made per trial,
so one process calls compiled CUDA graphs from several threads, one trial after another. PyTorch
before 2.13 kept CUDA-graph trees' state on the thread that first used them only, and the next
thread's compiled trial failed with a bare AssertionError (pytorch/pytorch#123177): a torch.compile
trial failed after a generation-under-load trial on the same worker. ``workers.torch_threads`` gives
each thread its own state; with PyTorch 2.13 and later the library does it itself."""

from __future__ import annotations

import threading

import pytest

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan

pytestmark = pytest.mark.gpu


def test_compiled_cuda_graph_trials_run_on_a_lane_thread_then_the_workers_own_then_another():
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    (trial,) = expand(parse_plan({
        "name": "threads", "device": "cuda", "models": [{"torchvision": "resnet18", "input_shape": [3, 64, 64]}],
        "matrix": {"batch_sizes": [1], "dtypes": ["fp16"],
                   "backends": [{"backend": "torch-compile", "options": {"mode": "reduce-overhead"}}]},
        "measure": {"warmup_iters": 5, "iters": 20, "max_time_s": 2}}))
    store = ModelStore()

    def on_a_new_thread():
        box = {}
        t = threading.Thread(target=lambda: box.update(row=run_trial(trial, "cuda", store)))
        t.start()
        t.join()
        return box["row"]

    rows = [on_a_new_thread(), run_trial(trial, "cuda", store), on_a_new_thread()]
    assert [r["status"] for r in rows] == ["ok"] * 3, [r.get("error") for r in rows]
