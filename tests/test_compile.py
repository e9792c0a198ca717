"""torch-compile on this machine's CPU (Inductor's C++ path): compile in setup, the per-node cache,
graph breaks and recompiles recorded, a recompile while timed fails the trial."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import run_all, trials_for

from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from orchestrator.run.api import run_plan
from workers.backends import get
from workers.context import TrialContext
from workers.models.build import ModelStore
from workers.trial import run_trial


def compile_trials(options=None, model="python:tinynet:make", **kw):
    return trials_for([{"backend": "torch-compile", "options": options or {}}], models=(model,), io=("device",), **kw)


def mlp_trials(*backends):
    """The MLP (16 features in) on ``backends``: Inductor generates and compiles fewer C++ kernels for
    it than for the CNN, so a cold compile costs less (the CNN goes through Inductor below)."""
    data = {"name": "mlp", "device": "cpu", "models": [{"python": "compilenets:make_mlp", "input_shape": [16]}],
            "matrix": {"batch_sizes": [2], "io": ["device"], "backends": list(backends)},
            "measure": {"warmup_iters": 2, "iters": 5, "warmup_max_s": 0.5, "max_time_s": 1}}
    return expand(parse_plan(data))


@pytest.mark.slow
def test_compiles_in_setup_reuses_the_node_cache_and_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path / "node-cache"))
    (trial,) = mlp_trials("torch-compile")
    store = ModelStore()
    first, second = run_trial(trial, "cpu", store), run_trial(trial, "cpu", store)
    for r in (first, second):
        assert r["status"] == "ok", r.get("error")
        assert r["graph_breaks"] == 0 and r["graph_break_reasons"] == [] and r["recompiles_during_timing"] == 0
        assert 0 < r["compile_time_s"] <= r["setup_s"]
        assert r["iters"] >= 5 and r["latency_ms_median"] > 0
    assert first["compile_cache_warm"] is False and second["compile_cache_warm"] is True
    assert second["compile_time_s"] < first["compile_time_s"]
    # nobody had built it: the first worker compiled under the compile's marker, the second found it
    assert first["artifact_build_s"] >= first["compile_time_s"] and second["artifact_build_s"] == 0
    assert any((tmp_path / "node-cache" / "inductor").iterdir()), "Inductor wrote outside the node cache"
    # and the compiled model computes what eager computes
    outs = []
    for t in (*mlp_trials("torch-eager"), trial):
        cls = get(t.backend)
        with cls(TrialContext(t, "cpu", store), cls.Options.model_validate(t.options)) as r:
            r.step()
            outs.append(r.output())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_a_compile_built_ahead_on_fake_tensors_makes_the_workers_compile_warm(tmp_path, monkeypatch):
    from workers.ahead import build

    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path / "node-cache"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # as a build-ahead task runs
    (trial,) = mlp_trials({"backend": "torch-compile", "options": {"mode": "default"}})
    seconds, error = build([trial], trial.seed)
    assert error is None and seconds > 0
    (marker,) = (tmp_path / "node-cache" / "inductor" / "ahead").glob("*.done")
    assert json.loads(marker.read_text()) == {"by": "ahead", "graphs": 1, "fxgraph_cache_hit": 0,
                                              "fxgraph_cache_miss": 1}
    row = run_trial(trial, "cpu", ModelStore())
    assert row["status"] == "ok", row.get("error")
    # the worker compiled from the cache the fake build filled, and built nothing itself
    assert row["compile_cache_warm"] is True and row["artifact_build_s"] == 0
    # a torch-compile trial on GPU needs a GPU in its build task: one without is told, not crashed
    (gpu_trial,) = expand(parse_plan({"name": "g", "device": "cuda", "models": ["torchvision:resnet18"],
                                      "matrix": {"batch_sizes": [1], "backends": ["torch-compile"]}}))
    assert build([gpu_trial], 0)[1] == "torch-compile: its compile needs a GPU visible, and this task has none"


@pytest.mark.slow
def test_recompile_while_timed_fails_the_trial_and_keeps_the_facts():
    (row,) = run_all(compile_trials(model="python:compilenets:make_unstable"))
    assert row["status"] == "failed"
    assert "compiled 1 more frame(s) after setup" in row["error"] and "latency not published" in row["error"]
    assert row["recompiles_during_timing"] == 1
    assert row["graph_breaks"] == 1 and "disable" in row["graph_break_reasons"][0]
    assert row.get("latency_ms_median") is None


def test_fullgraph_makes_a_graph_break_a_failure():
    (row,) = run_all(compile_trials({"fullgraph": True}, model="python:compilenets:make_unstable"))
    assert row["status"] == "failed" and row.get("latency_ms_median") is None
    assert "Unsupported" in row["error"] or "graph break" in row["error"].lower(), row["error"]


def test_channels_last_on_a_2d_input_is_skipped_with_the_reason():
    data = {"name": "m", "device": "cpu",
            "models": [{"python": "compilenets:make_mlp", "input_shape": [16]}],
            "matrix": {"batch_sizes": [2], "backends": [
                {"backend": b, "options": {"channels_last": True}} for b in ("torch-eager", "torch-compile")]},
            "measure": {"warmup_iters": 1, "iters": 2}}
    rows = run_all(expand(parse_plan(data)))
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all("channels_last needs 4-D inputs" in r["error"] and "2-D (batch, 16)" in r["error"] for r in rows)


def test_fp16_on_cpu_is_skipped_with_the_reason():
    (row,) = run_all(compile_trials(dtypes=("fp16",)))
    assert row["status"] == "skipped" and "does not support dtype fp16 on cpu" in row["error"]


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "reduce_overhead"}, "matrix.backends[0].options.mode: Input should be 'default', 'reduce-overhead'"),
    ({"mode": "max-autotune", "backend": "eager"}, "matrix.backends[0].options: mode 'max-autotune' is an "
                                                   "inductor mode; backend is 'eager'"),
    ({"backend": "tensorrt"}, "matrix.backends[0].options.backend: Input should be 'inductor'"),
    ({"dynamic": "sometimes"}, "matrix.backends[0].options.dynamic:"),
    ({"full_graph": True}, "unknown key 'full_graph' (did you mean 'fullgraph'?)"),
])
def test_bad_options_are_located(options, message):
    with pytest.raises(PlanError) as exc:
        compile_trials(options)
    assert message in str(exc.value)


def test_run_path_writes_the_build_columns(ray_gpus, write_plan, tmp_path):
    # Dynamo with its eager backend (no code generation: fast); Inductor is exercised above.
    plan = write_plan("""\
        name: compile
        device: cpu
        models: [{python: "tinynet:make", input_shape: [3, 16, 16]}]
        matrix:
          batch_sizes: [2]
          backends: [{backend: torch-compile, label: compiled, options: {backend: eager}}]
        measure: {warmup_iters: 2, warmup_max_iters: 2, iters: 5, target_rel_ci: null}
        """)
    result = run_plan(plan, out=tmp_path / "out")
    (row,) = result.rows
    assert row["status"] == "ok", row.get("error")
    table = pq.read_table(tmp_path / "out")
    assert table.column("compile_time_s")[0].as_py() > 0
    assert table.column("recompiles_during_timing")[0].as_py() == 0
    # Dynamo's eager backend: no Inductor, so no FX graph cache to be warm or cold
    assert table.column("compile_cache_warm")[0].as_py() is None
    assert table.column("graph_breaks")[0].as_py() == 0


@pytest.mark.gpu
def test_reduce_overhead_fp16_channels_last_on_cuda():
    data = {"name": "g", "device": "cuda", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [8], "dtypes": ["fp16", "bf16"], "io": ["device", "host"],
                       "backends": ["torch-eager",
                                    {"backend": "torch-compile", "label": "ro-cl",
                                     "options": {"mode": "reduce-overhead", "channels_last": True}}],
                       "exclude": [{"dtype": "bf16", "io": "host"}]},
            "measure": {"warmup_iters": 5, "iters": 20, "max_time_s": 3}}
    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    for r in rows:
        assert r["status"] == "ok", (r["label"], r["dtype"], r["io"], r.get("error"))
    for r in (r for r in rows if r["backend"] == "torch-compile"):
        assert r["recompiles_during_timing"] == 0 and r["graph_breaks"] == 0
        assert 0 < r["compile_time_s"] <= r["setup_s"]
    # the compiled model computes what eager computes (fp16: loose tolerance)
    (t_eager,) = [t for t in expand(parse_plan(data)) if t.label == "torch-eager" and t.dtype == "fp16"
                  and t.io == "device"]
    (t_comp,) = [t for t in expand(parse_plan(data)) if t.label == "ro-cl" and t.dtype == "fp16"
                 and t.io == "device"]
    outs = []
    for t in (t_eager, t_comp):
        cls = get(t.backend)
        with cls(TrialContext(t, "cuda", store), cls.Options.model_validate(t.options)) as r:
            r.step()
            outs.append(r.output())
    np.testing.assert_allclose(outs[0], outs[1], rtol=5e-2, atol=5e-2)


@pytest.mark.gpu
def test_a_gpu_compile_built_ahead_puts_nothing_on_the_gpu_and_warms_the_worker(tmp_path, monkeypatch):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from workers.backends import compile_ahead

    monkeypatch.setenv("INFER_ORCH_CACHE", str(tmp_path / "node-cache"))
    data = {"name": "g", "device": "cuda", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [8], "dtypes": ["fp16"], "io": ["device"],
                       "backends": [{"backend": "torch-compile", "label": "ro-cl",
                                     "options": {"mode": "reduce-overhead", "channels_last": True}}]},
            "measure": {"warmup_iters": 5, "iters": 20, "max_time_s": 3}}
    (trial,) = expand(parse_plan(data))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        built = compile_ahead.build(trial, ModelStore())
    assert not built.cached and json.loads(built.path.read_text())["graphs"] == 1
    launched = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert launched == [] and torch.cuda.memory_allocated() == before
    row = run_trial(trial, "cuda", ModelStore())
    assert row["status"] == "ok", row.get("error")
    assert row["compile_cache_warm"] is True and row["artifact_build_s"] == 0
