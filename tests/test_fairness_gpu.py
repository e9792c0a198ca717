"""Fair by construction, on a GPU: TF32 on both sides (a torch CUDA-graph row against a hand-written
torch TF32 CUDA-graph loop of the same model in the same process; ORT's session reporting the
math asked), and the input pool on every graph backend."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan

pytestmark = pytest.mark.gpu

BERT = {"hf": "bert-base", "axes": {"seq": 128}}
TIMING = {"warmup_iters": 50, "warmup_max_iters": 2000, "iters": 300, "target_rel_ci": 0.01, "max_time_s": 20}


def _trials(backends, models=(BERT,), **measure):
    return expand(parse_plan({"name": "fair-gpu", "device": "cuda", "models": list(models),
                              "matrix": {"batch_sizes": [1], "backends": backends},
                              "measure": {**TIMING, **measure}}))


def _hand_written_graph_ms(trial, store, iters=300) -> float:
    """The model of ``trial`` in a torch CUDA graph with TF32 allowed, timed by CUDA events per replay."""
    import torch

    from workers.measure import mathmode
    from workers.models.build import call_model, make_inputs

    mathmode.apply_torch("tf32")
    model = store.torch_model(trial.model, "cuda", "fp32")
    xs = make_inputs(trial.model, trial.batch_size, "fp32", "cuda", trial.seed, trial.axes)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(5):
            call_model(trial.model, model, xs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        call_model(trial.model, model, xs)
    for _ in range(100):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(iters):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    del graph, model
    torch.cuda.empty_cache()
    return float(np.median(samples))


def test_the_fp32_bert_graph_row_runs_tf32_as_a_hand_written_tf32_graph_loop_does():
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    store = ModelStore()
    (trial,) = _trials(["torch-cudagraph"])
    row = run_trial(trial, "cuda", store)
    assert row["status"] == "ok", row.get("error")
    assert row["math"] == "tf32" and row["math_effective"] == "tf32"
    hand = _hand_written_graph_ms(trial, store)
    assert abs(row["latency_ms_median"] / hand - 1) <= 0.10, (row["latency_ms_median"], hand)


def test_ort_reports_the_math_asked_of_its_cuda_provider():
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    small = {"torchvision": "resnet18", "input_shape": [3, 64, 64]}
    backends = [{"backend": "ort", "options": {"io_binding": True}, "math": ["tf32", "strict"]}, "torch-eager"]
    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in _trials(backends, models=(small,), iters=20, target_rel_ci=None)]
    got = {(r["backend"], r["math"]): r["math_effective"] for r in rows}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert got == {("ort", "tf32"): "tf32", ("ort", "strict"): "strict", ("torch-eager", "tf32"): "tf32"}
    strict = next(r for r in rows if r["math"] == "strict")
    assert '"use_tf32": "0"' in strict["ort_provider_options"]


GRAPH_BACKENDS = [
    ({"backend": "torch-cudagraph"}, "copy"),
    ({"backend": "torch-compile", "options": {"mode": "reduce-overhead"}}, "inputs"),
    ({"backend": "ort", "options": {"io_binding": True, "cuda_graph": True}}, "copy"),
]


@pytest.mark.parametrize("entry, feed", GRAPH_BACKENDS, ids=["torch-cudagraph", "torch-compile-ro", "ort-graph"])
def test_a_pool_cycles_through_distinct_inputs_on_every_graph_backend(entry, feed):
    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure import pool
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    small = {"torchvision": "resnet18", "input_shape": [3, 64, 64]}
    (trial,) = _trials([entry], models=(small,), iters=30, target_rel_ci=None, input_pool=3, repeat_check=True)
    store = ModelStore()
    cls = get(trial.backend)
    with cls(TrialContext(trial=trial, device="cuda", store=store), cls.Options(**trial.options)) as runner:
        assert runner.stage_pool(pool.seeds(trial)) == feed
        step, outs = pool.cycling(runner, 3), []
        for _ in range(6):
            step()
            outs.append(np.asarray(runner.output()).copy())
    assert all(not np.allclose(outs[i], outs[j]) for i in range(3) for j in range(i + 1, 3))
    assert all(np.allclose(outs[i], outs[i + 3], rtol=1e-3, atol=1e-4) for i in range(3))
    row = run_trial(trial, "cuda", store)
    assert row["status"] == "ok", row.get("error")
    assert row["pool_feed"] == feed and row["input_pool"] == 3 and row["repeat_median_ms"] > 0
    assert not any(r.startswith("faster on a repeated") for r in row["invalid_reasons"]), row["invalid_reasons"]
