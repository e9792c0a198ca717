"""Each backend runner on this machine's CPU, with real torch models and real ORT sessions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_all, trials_for

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.backends import registry
from workers.models.build import ModelStore
from workers.trial import run_trial


def test_registry_has_the_three_backends():
    assert {"torch-eager", "torch-cudagraph", "ort"} <= set(registry())


def test_torch_eager_measures_every_iteration_on_cpu():
    rows = run_all(trials_for(["torch-eager", {"backend": "torch-eager", "label": "cl",
                                               "options": {"channels_last": True}}]))
    for r in rows:
        assert r["status"] == "ok", r.get("error")
        # iters is a minimum: sampling goes on until the median's CI is tight (or max_time_s)
        assert r["iters"] >= 5 and len(r["samples_ms"]) == r["iters"] and r["warmup_iters"] >= 2
        assert r["converged"] or r["hit_max_time"]
        assert r["latency_ms_min"] <= r["latency_ms_median"] <= r["latency_ms_max"]
        assert r["throughput"] == pytest.approx(2 * 1e3 / r["latency_ms_median"])
        assert r["device"] == "cpu" and r["torch_version"]


def test_torch_cudagraph_is_skipped_on_cpu_not_run_as_eager():
    (row,) = run_all(trials_for(["torch-cudagraph"], io=("device",)))
    assert row["status"] == "skipped"
    assert "needs a CUDA device" in row["error"] and row.get("latency_ms_median") is None


def test_ort_session_run_and_io_binding_on_cpu_provider():
    rows = run_all(trials_for([{"backend": "ort", "label": "default"},
                               {"backend": "ort", "label": "bound", "options": {"io_binding": True}}]))
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    assert all(r["providers_used"] == ["CPUExecutionProvider"] for r in rows)
    # one export per (model, batch, dtype) on this node: the later trials find it cached
    assert sorted(r["export_cached"] for r in rows).count(True) >= 3


def outputs(trials) -> list[np.ndarray]:
    """Each trial's runner set up on the CPU, one step, its output."""
    from workers.backends import get
    from workers.context import TrialContext

    store = ModelStore()
    outs = []
    for t in trials:
        cls = get(t.backend)
        with cls(TrialContext(t, "cpu", store), cls.Options.model_validate(t.options)) as r:
            r.step()
            outs.append(r.output())
    return outs


def test_ort_matches_torch_outputs():
    (t_eager,) = trials_for(["torch-eager"], io=("device",))
    (t_ort,) = trials_for([{"backend": "ort", "options": {"io_binding": True}}], io=("device",))
    outs = outputs([t_eager, t_ort])
    assert outs[0].shape == outs[1].shape == (2, 10)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_ort_asking_for_cuda_on_cpu_is_skipped_with_reason():
    (row,) = run_all(trials_for([{"backend": "ort", "options": {"providers": ["cuda"]}}], io=("host",)))
    assert row["status"] == "skipped" and "need a GPU" in row["error"]


def test_unsupported_dtype_is_skipped_and_the_rest_run():
    rows = run_all(trials_for(["ort", "torch-eager"], io=("host",), dtypes=("fp32", "bf16")))
    by = {(r["backend"], r["dtype"]): r for r in rows}
    assert by[("ort", "bf16")]["status"] == "skipped" and "does not support dtype bf16" in by[("ort", "bf16")]["error"]
    assert by[("ort", "fp32")]["status"] == by[("torch-eager", "bf16")]["status"] == "ok"


def test_failure_in_a_trial_is_a_row_with_the_error():
    (row,) = run_all(trials_for(["torch-eager"], models=("python:tinynet:not_a_module",), io=("host",)))
    assert row["status"] == "failed"
    assert "returned int, not an nn.Module" in row["error"] and "Traceback" in row["traceback"]


@pytest.mark.slow
def test_torchvision_model_with_ort_and_eager_agree_in_shape():
    eager, ort = outputs(trials_for(["torch-eager", "ort"], models=("torchvision:squeezenet1_1",), io=("host",)))
    assert eager.shape == ort.shape == (2, 1000)  # batch 2 x ImageNet's classes, from the exported graph too
    np.testing.assert_allclose(ort, eager, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_every_backend_on_cuda():
    data = {"name": "g", "device": "cuda", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [4], "dtypes": ["fp32", "fp16"], "io": ["device", "host"],
                       "backends": ["torch-eager", "torch-cudagraph",
                                    {"backend": "ort", "label": "ort-run", "io": ["host"]},
                                    {"backend": "ort", "label": "ort-bind", "options": {"io_binding": True}},
                                    {"backend": "ort", "label": "ort-graph",
                                     "options": {"io_binding": True, "cuda_graph": True}}]},
            "measure": {"warmup_iters": 5, "iters": 20, "warmup_max_s": 1, "max_time_s": 2}}
    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    for r in rows:
        assert r["status"] == "ok", (r["label"], r["dtype"], r["io"], r.get("error"))
        assert r["gpu_mem_peak_bytes"] > 0 and r["gpu_uuid"].startswith("GPU-")
    assert all(r["providers_used"][0] == "CUDAExecutionProvider" for r in rows if r["backend"] == "ort")
