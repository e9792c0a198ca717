"""The validity verdict (workers/measure/validity.py): each rule on hand-built and seeded rows, then what a
user relies on downstream of it: a stale CUDA-graph-like backend caught in every trial, `compare`
saying `invalid` instead of a verdict, budgets saying they judged an invalid row, `--retry-invalid`
re-running exactly the invalid trials."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from workers.measure import stats, validity


def _row(samples, repeats=None, **over):
    """An ok single-stream row of ``samples`` (ms), its columns as the worker computes them."""
    repeats = repeats or [samples]
    row = {"status": "ok", "converged": True, "hit_max_time": False, "contended": False, "gpu_other_pids": [],
           "samples_ms": list(samples), "iters": len(samples),
           "repeat_medians_ms": [stats.median(r) for r in repeats],
           "repeat_rel_ci": [stats.relative_ci(r) for r in repeats],
           **stats.latency_stats(samples, 1)}
    return {**row, **over}


def _reasons(row):
    return validity.verdict(row, None)


def test_a_steady_row_is_valid():
    rng = np.random.default_rng(0)
    v = _reasons(_row(rng.normal(10, 0.1, 200)))
    assert v == {"valid": True, "invalid_reasons": []}


def test_rows_without_a_measurement_have_no_verdict():
    assert _reasons({"status": "failed"}) == {"valid": None, "invalid_reasons": None}


@pytest.mark.parametrize("over, code", [
    ({"converged": False, "hit_max_time": True}, "not converged: 95% CI of the median +-"),
    ({"contended": True, "gpu_other_pids": [4242]}, "contended: pid 4242 also on the GPU during timing"),
])
def test_flags_of_the_timing_loop_and_the_gpu_make_a_row_invalid(over, code):
    rng = np.random.default_rng(1)
    v = _reasons(_row(rng.normal(10, 0.1, 200), **over))
    assert v["valid"] is False and len(v["invalid_reasons"]) == 1 and v["invalid_reasons"][0].startswith(code)


def test_noisy_is_iqr_over_median_above_ten_percent_and_outliers_alone_are_not_noise():
    rng = np.random.default_rng(2)
    wide = rng.normal(10, 1.5, 400)  # IQR ~ 2 ms: 20%
    (reason,) = _reasons(_row(wide))["invalid_reasons"]
    assert reason.startswith("noisy: IQR/median 2") and reason.endswith("> 10.0%")
    # 3% of samples 10x slower (a GC pause, an interrupt): std/mean ~ 50%, but the median is steady
    spiky = np.concatenate([rng.normal(10, 0.1, 388), np.full(12, 100.0)])
    assert np.std(spiky) / np.mean(spiky) > 0.5
    assert _reasons(_row(spiky))["valid"] is True


def test_repeats_that_move_more_than_their_own_intervals_disagree():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(10, 0.1, 200), rng.normal(10.5, 0.1, 200), rng.normal(10.02, 0.1, 200)
    (reason,) = _reasons(_row(np.concatenate([a, b]), repeats=[a, b]))["invalid_reasons"]
    assert reason.startswith("repeats disagree: medians 10") and "spread of 4.8%" in reason and "own 95% CI" in reason
    assert _reasons(_row(np.concatenate([a, c]), repeats=[a, c]))["valid"] is True  # 0.2%: under the floor
    # wide repeats 3% apart: within their own noise, so they agree
    w1, w2 = rng.normal(10, 0.8, 30), rng.normal(10.3, 0.8, 30)
    assert abs(stats.median(w1) - stats.median(w2)) > 0.1  # above the 1% floor: the intervals decide
    assert validity.repeats_disagree([stats.median(w1), stats.median(w2)],
                                     [stats.relative_ci(w1), stats.relative_ci(w2)]) is None


def test_too_few_samples_for_an_interval_is_invalid():
    (reason,) = _reasons(_row([10.0, 10.1, 10.0, 9.9]))["invalid_reasons"]
    assert reason == "too few samples: 4 < 6, no confidence interval of the median"


def test_load_scenarios_spread_is_not_judged_here_but_contention_is():
    """The measurement rules only (a server row's own rules, on its schedule: tests/test_scenarios.py)."""
    rng = np.random.default_rng(4)
    queueing = rng.exponential(10, 400)  # a server scenario's latencies: wide by nature
    assert validity.measurement_reasons(_row(queueing, scenario="server")) == []
    v = validity.measurement_reasons(_row(queueing, scenario="server", contended=True, gpu_other_pids=[7]))
    assert [r.split(":")[0] for r in v] == ["contended"]
    assert _reasons(_row(queueing))["valid"] is False  # the same spread in single-stream: noisy


# --- stale outputs: a second input through the timed buffers (workers/measure/stale.py) ---

def _affine_onnx(path):
    """x float [N, 8] -> y = 2 x + 1: an ONNX file with no torch form (its reference is its own)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    two, one = (helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("two", 2.0), ("one", 1.0)))
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "affine", [x], [y], initializer=[two, one]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _ort_trials(tmp_path):
    """ORT on the CPU, every way a step reads its input: session.run's feeds, bound buffers filled from
    the host (io: host) or bound directly; a torch model (torch reference) and an ONNX file (its own)."""
    from helpers import trials_for

    onnx_file = str(_affine_onnx(tmp_path / "affine.onnx"))
    bound = {"exporter": "torchscript", "io_binding": True}
    return trials_for([{"backend": "ort", "label": "run", "options": {"exporter": "torchscript"}},
                       {"backend": "ort", "label": "bound", "options": bound}],
                      models=("python:tinynet:make", f"onnx:{onnx_file}"))


def test_the_stale_check_passes_a_backend_that_reads_its_buffers_and_fails_one_that_does_not(monkeypatch, tmp_path):
    """The check itself, through real ORT sessions on the CPU (its graph and TensorRT cases need a GPU:
    the check is forced on here). The same backend made stale (``feed`` writes nothing, as a graph that
    replays old buffers) is caught, on every path, against the torch reference and the ONNX file's own."""
    from helpers import run_all

    from workers.backends.ort import OrtRunner

    trials = _ort_trials(tmp_path)
    monkeypatch.setattr(OrtRunner, "checks_stale", lambda self: True)
    rows = run_all(trials)
    assert [r["status"] for r in rows] == ["ok"] * len(trials), [r.get("error") for r in rows]
    assert all(r["stale_max_rel_err"] < 1e-5 for r in rows)
    refs = {r["model_source"].split(":")[0]: r["stale_reference"] for r in rows}
    assert len(rows) == 8 and refs == {"python": "torch-eager fp32 on cpu, second input (seed 1)",
                                       "onnx": "the ONNX file on ORT's CPU provider, optimisations off, "
                                               "second input (seed 1)"}

    monkeypatch.setattr(OrtRunner, "feed", lambda self, seed: None)
    rows = run_all(trials)
    assert [r["status"] for r in rows] == ["parity_failed"] * len(trials)
    for r in rows:
        assert r["error"].startswith("stale output: after timing, a second input (seed 1)") and \
            "it is the first input's output, unchanged" in r["error"], r["error"]
        assert r.get("latency_ms_median") is None and r["stale_max_rel_err"] > 0.05
        if r["parity_reference"] is not None:  # a torch model: its timed input passed parity, and the row says so
            assert r["parity_max_rel_err"] < 1e-5


def test_a_backend_without_a_captured_graph_is_not_stale_checked():
    from helpers import run_all, trials_for

    (row,) = run_all(trials_for([{"backend": "ort", "options": {"exporter": "torchscript"}}], io=("host",)))
    assert row["status"] == "ok" and row["stale_reference"] is None and row["stale_max_rel_err"] is None


GRAPH_BACKENDS = ({"backend": "torch-cudagraph"},
                  {"backend": "ort", "label": "ort-graph", "options": {"io_binding": True, "cuda_graph": True}})


@pytest.mark.gpu
def test_real_cuda_graphs_pass_the_stale_check_and_a_stale_one_fails(monkeypatch):
    """On a GPU: torch's CUDA graph and ORT's, io host and device, read a second input written into their
    buffers (checked against torch eager fp32); the same runners made stale are caught in every trial."""
    import torch
    from helpers import trials_for

    from workers.backends.ort import OrtRunner
    from workers.backends.torch_cudagraph import TorchCudaGraph
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    trials = trials_for(list(GRAPH_BACKENDS), models=("torchvision:resnet18",), device="cuda")
    store = ModelStore()
    rows = [run_trial(t, "cuda", store, cpus=1) for t in trials]
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    for r in rows:
        assert r["stale_reference"] == "torch-eager fp32 on cuda, second input (seed 1)"
        assert r["stale_max_rel_err"] <= r["parity_tolerance"]
    for cls in (TorchCudaGraph, OrtRunner):
        monkeypatch.setattr(cls, "feed", lambda self, seed: None)  # the graph replays its first input
    rows = [run_trial(t, "cuda", store, cpus=1) for t in trials]
    assert [r["status"] for r in rows] == ["parity_failed"] * 4
    assert all(r["error"].startswith("stale output") for r in rows), [r["error"] for r in rows]


# --- the run path: one real run (Ray, logical GPUs) of a valid, an invalid and a stale trial ---

RUN_PLAN = """\
name: validity
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: [1]
  backends:
    - {backend: sleep, label: steady, options: {step_s: 0.05}}  # valid unless the machine is very busy
    - {backend: fault, label: noisy, options: {mode: noisy}}
    - {backend: fault, label: stale, options: {mode: stale}}
budgets:
  - {label: noisy, max_latency_ms: 1000}
measure: {warmup_iters: 0, warmup_max_iters: 0, iters: 16, target_rel_ci: null, max_time_s: 5}
"""


@pytest.fixture(scope="module")
def stored_run(ray_gpus, tmp_path_factory):
    from helpers import reseed

    from orchestrator.run.api import run_plan

    d = tmp_path_factory.mktemp("validity")
    (d / "plan.yaml").write_text(RUN_PLAN)
    result = run_plan(d / "plan.yaml", out=d / "out", workers=1)
    # The steady sleeps come out noisy when a neighbouring test hogs both cores (IQR/median 11% over
    # 10 sleeps, seen in a clean-clone `make test`): the stored steady row gets seeded samples, so what
    # is read back (compare, --retry-invalid) is a valid row whatever the load. The rule on steady
    # samples is test_a_steady_row_is_valid's; the noisy and stale rows are deterministic as they ran.
    reseed(d / "out", {"steady": 50.0}, seed=0)
    return d / "plan.yaml", d / "out", result


def test_a_run_marks_the_noisy_row_invalid_catches_the_stale_one_and_budgets_say_so(stored_run):
    _, _, result = stored_run
    rows = {r["label"]: r for r in result.rows}
    assert rows["steady"]["status"] == "ok"  # (its validity depends on the machine's load: see stored_run)
    noisy = rows["noisy"]
    assert noisy["status"] == "ok" and noisy["valid"] is False
    assert any(r.startswith("noisy: IQR/median") for r in noisy["invalid_reasons"]), noisy["invalid_reasons"]
    stale = rows["stale"]
    assert stale["status"] == "parity_failed" and stale["error"].startswith("stale output") and stale["valid"] is None
    assert stale["stale_reference"] == "the fault backend's known function 2 x + 1, second input (seed 1)"
    # the budget was met, but on a number not to act on: said, not silently passed
    assert result.budget_misses == []
    ((row, message),) = result.budget_invalid
    assert row["label"] == "noisy" and message.startswith("max_latency_ms 1000 judged on an invalid row (noisy: ")
    assert message.endswith("met, but not a number to act on")


def test_compare_says_invalid_and_exits_0_for_an_invalid_row(stored_run):
    import json

    from helpers import cli

    _, out, _ = stored_run
    proc = cli("compare", out, out, "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdicts = {t["label"]: t for t in json.loads(proc.stdout)["trials"]}
    assert verdicts["steady"]["verdict"] == "unchanged" and verdicts["stale"]["verdict"] == "not ok"
    assert verdicts["noisy"]["verdict"] == "invalid"
    assert verdicts["noisy"]["invalid_reasons"][0].startswith("base: noisy: IQR/median")
    table = cli("compare", out, out)
    assert "invalid" in table.stdout and "1 not judged: invalid rows" in table.stdout


def test_retry_invalid_runs_exactly_the_invalid_trials_again(stored_run):
    from helpers import cli

    from orchestrator.results.read import load_results
    from orchestrator.run.api import run_plan

    plan, out, first = stored_run
    started = lambda: {r["trial_id"]: r["started_at"] for r in load_results(out).to_pylist()}  # noqa: E731
    before = started()
    noisy_id = next(r["trial_id"] for r in first.rows if r["label"] == "noisy")
    again = run_plan(plan, resume=out, retry_invalid=True, workers=1)
    assert [r["trial_id"] for r in again.rows] == [noisy_id]  # not the stale one: that is --retry-failed's
    assert sorted(again.kept.values()) == ["ok", "parity_failed"]
    after = started()
    assert [k for k in after if after[k] != before[k]] == [noisy_id]  # its row replaced, the others kept
    proc = cli("run", plan, "--retry-invalid")
    assert proc.returncode == 2 and "--retry-invalid needs --resume DIR" in proc.stderr


# --- contention sampled during timing, not only at its ends ---

class _Nvml:
    """NVML as seen from a GPU that another process (pid 4242) uses while ``busy`` is set (fault
    injection: no GPU here). Only what the process check reads; the other reads fail (null)."""

    def __init__(self):
        self.busy = threading.Event()

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802 - NVML's names
        return "h"

    def nvmlDeviceGetComputeRunningProcesses(self, h):  # noqa: N802
        import os
        from types import SimpleNamespace

        return [SimpleNamespace(pid=p) for p in [os.getpid()] + ([4242] if self.busy.is_set() else [])]


def test_a_process_that_uses_the_gpu_only_mid_timing_is_caught(monkeypatch):
    """Another process on the GPU for 0.2 s in the middle of 1 s of timing, gone before timing ends:
    reading the process list at the start and end alone misses it; the sampler during timing doesn't."""
    from workers.contract import MeasureSpec
    from workers.measure import envinfo, nvml
    from workers.measure.timing import HostTimer, measure

    nv = _Nvml()
    monkeypatch.setattr(nvml, "load", lambda: nv)
    spec = MeasureSpec(warmup_iters=0, warmup_max_iters=0, iters=40, target_rel_ci=None)

    def timed(other: bool) -> dict:
        n = [0]

        def step():
            n[0] += 1  # steps 15-24 of 40: the other process comes and goes within the timing
            (nv.busy.set if other and 15 <= n[0] < 25 else nv.busy.clear)()
            time.sleep(0.025)

        watch = envinfo.GpuWatch("GPU-x", period_s=0.05)
        measure(step, HostTimer(), spec, on_timed=watch)
        return watch.finish()

    for other in (False, True):
        cols = timed(other)
        assert cols["contended"] is other and cols["gpu_other_pids"] == ([4242] if other else [])
        assert cols["contention_checks"] >= 10  # start, ~20 during 1 s of timing, end
    assert not any(t.name == "infer-orch-sampler" for t in threading.enumerate())
