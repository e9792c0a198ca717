"""The timing thread's CPU: which one for which GPU, pinned only inside the block, the sampler off it."""

from __future__ import annotations

import os
import threading

import pytest

from workers.measure import affinity
from workers.measure.sampler import Sampler


def test_the_gpus_of_a_host_take_cpus_spread_over_their_local_set():
    sixteen = list(range(16))
    assert affinity.choose(sixteen, 0, 1) == 8  # not CPU 0, where interrupts usually land
    assert [affinity.choose(sixteen, i, 2) for i in range(2)] == [4, 12]
    assert [affinity.choose(sixteen, i, 4) for i in range(4)] == [2, 6, 10, 14]
    assert affinity.choose([7, 3, 5], 0, 1) == 5
    assert affinity.choose([], 0, 1) is None
    assert affinity._cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv("INFER_ORCH_PIN_TIMING", "0")
    assert affinity.timing_cpu("GPU-any") is None


def test_a_bad_pin_setting_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    plan = tmp_path / "p.yaml"
    plan.write_text("name: p\ndevice: cpu\nmodels: [torchvision:resnet18]\n"
                    "matrix: {batch_sizes: [1], backends: [{backend: sleep, options: {step_s: 0.001}}]}\n")
    monkeypatch.setenv("INFER_ORCH_PIN_TIMING", "no")
    res = CliRunner().invoke(app, ["run", str(plan), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "INFER_ORCH_PIN_TIMING='no': expected 0 (off) or 1 (on)" in res.output
    assert not (tmp_path / "o").exists() and "Traceback" not in res.output


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_pinned_inside_the_block_only_and_the_sampler_runs_on_the_other_cpus():
    before = os.sched_getaffinity(0)
    cpu = max(before)
    seen: dict[str, set[int]] = {}
    ran = threading.Event()

    def where() -> int:
        if threading.current_thread() is not threading.main_thread():  # the sampler's own thread
            seen.setdefault("sampler", os.sched_getaffinity(0))
            ran.set()
        return 1

    with affinity.pinned(cpu) as got:
        assert got == cpu and os.sched_getaffinity(0) == {cpu}
        sampler = Sampler({"where": (where, 0.01)})  # started from the pinned thread, as in timing
        assert ran.wait(10)
        sampler.stop()
    assert os.sched_getaffinity(0) == before
    assert seen["sampler"] == before - {cpu}
    with affinity.pinned(None) as got:
        assert got is None and os.sched_getaffinity(0) == before


@pytest.mark.gpu
def test_a_gpu_trial_is_timed_pinned_and_its_utilization_tells_launch_bound_from_gpu_bound():
    """Real GPU trials: the timing thread's CPU is recorded, and NVML's utilization during timing
    puts eager MobileNetV2 at batch 1 (launch-bound) below compare's host-bound line and its CUDA
    graph above it."""
    import torch
    from helpers import trials_for

    from orchestrator.answers.compare import HOST_BOUND_UTIL_PCT, host_bound
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    trials = trials_for([], models=("torchvision:mobilenet_v2",), device="cuda", measure={"min_time_s": 1.0},
                        matrix={"batch_sizes": [1], "dtypes": ["fp32"], "io": ["device"],
                                "backends": ["torch-eager", "torch-cudagraph"]})
    rows = {r["backend"]: r for r in (run_trial(t, "cuda", ModelStore()) for t in trials)}
    for r in rows.values():
        assert r["status"] == "ok", r["error"]
        assert r["timing_cpu"] in os.sched_getaffinity(0)
        assert 0 <= r["gpu_util_pct"] <= 100
    assert rows["torch-eager"]["gpu_util_pct"] < HOST_BOUND_UTIL_PCT <= rows["torch-cudagraph"]["gpu_util_pct"]
    assert host_bound(rows["torch-eager"]) and not host_bound(rows["torch-cudagraph"])
