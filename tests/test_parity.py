"""Parity on every trial, real runs through run_trial on this CPU; and every new column in a row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.errors import PlanError
from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.contract import DEFAULT_TOLERANCE as PARITY_TOLERANCE
from workers.contract import ModelSpec
from workers.measure.parity import compare
from workers.models.build import ModelStore, make_input
from workers.schema import _STATS
from workers.trial import run_trial

REPO = Path(__file__).resolve().parents[1]
FAST = {"warmup_iters": 1, "iters": 5, "warmup_max_s": 0.2, "max_time_s": 0.5}


def plan(factory="make", dtypes=("fp32",), backends=("torch-eager",), io=("device",), measure=None, **extra):
    data = {"name": "p", "device": "cpu",
            "models": [{"python": f"tinynet:{factory}", "input_shape": [3, 16, 16]}],
            "matrix": {"batch_sizes": [2], "dtypes": list(dtypes), "io": list(io), "backends": list(backends)},
            "measure": {**FAST, **(measure or {})}, **extra}
    return expand(parse_plan(data))


def run(trials):
    store = ModelStore()
    return [run_trial(t, "cpu", store) for t in trials]


def test_every_trial_is_compared_with_torch_fp32_and_passes_when_right():
    rows = run(plan(dtypes=("fp32", "bf16"), backends=("torch-eager", "ort")))
    by = {(r["backend"], r["dtype"]): r for r in rows}
    assert by[("ort", "bf16")]["status"] == "skipped"
    for key in [("torch-eager", "fp32"), ("torch-eager", "bf16"), ("ort", "fp32")]:
        r = by[key]
        assert r["status"] == "ok", r.get("error")
        assert r["parity_reference"] == "torch-eager fp32 on cpu"
        assert r["parity_tolerance"] == PARITY_TOLERANCE[r["dtype"]]
        assert 0 <= r["parity_max_rel_err"] <= r["parity_tolerance"]
    assert by[("torch-eager", "fp32")]["parity_max_abs_err"] == 0.0
    assert by[("torch-eager", "bf16")]["parity_max_rel_err"] > 0  # bf16 really ran in bf16


def test_an_injected_wrong_output_is_parity_failed_with_its_error_recorded():
    (row,) = run(plan("wrong_below_fp32", dtypes=("bf16",)))
    assert row["status"] == "parity_failed"
    assert "differs from the torch-eager fp32 reference" in row["error"] and "> tolerance 0.25 for bf16" in row["error"]
    assert row["parity_max_rel_err"] > 0.25 and row.get("latency_ms_median") is None
    assert row["iters"] >= 5  # it ran; only its latency is withheld


def test_an_injected_nan_is_parity_failed():
    (row,) = run(plan("nan_below_fp32", dtypes=("bf16",)))
    assert row["status"] == "parity_failed" and "NaN/Inf" in row["error"]
    assert row.get("latency_ms_median") is None


def test_tolerance_is_overridable_in_the_plan_and_parity_can_be_switched_off():
    (row,) = run(plan("wrong_below_fp32", dtypes=("bf16",), parity={"tolerance": {"bf16": 0.6}}))
    assert row["status"] == "ok" and row["parity_tolerance"] == 0.6
    (row,) = run(plan("wrong_below_fp32", dtypes=("bf16",), parity={"check": False}))
    assert row["status"] == "ok" and row["parity_reference"] is None and row["parity_max_rel_err"] is None


def test_an_onnx_file_model_is_checked_against_the_file_on_ort_cpu(tmp_path):
    import torch
    from tinynet import make

    path = tmp_path / "net.onnx"
    torch.onnx.export(make().eval(), (torch.randn(2, 3, 16, 16),), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"])
    data = {"name": "o", "device": "cpu", "models": [str(path)],
            "matrix": {"batch_sizes": [2], "io": ["host"], "backends": ["ort"]}, "measure": FAST}
    (row,) = run(expand(parse_plan(data)))
    assert row["status"] == "ok", row.get("error")
    assert row["parity_reference"] == "the ONNX file on ORT's CPU provider, optimisations off"
    assert row["parity_max_rel_err"] < 1e-5 and row["parity_unchecked"] is None


def test_a_row_carries_every_new_column():
    (row,) = run(plan(measure={"repeats": 3}, io=("host",)))
    assert row["status"] == "ok", row.get("error")
    new = {name for name, _, _ in _STATS}
    assert new <= set(row), sorted(new - set(row))
    filled = {"converged", "latency_ms_std", "latency_ms_cv", "latency_ms_iqr", "latency_ms_p50", "latency_ms_p95",
              "latency_ms_ci_low", "latency_ms_ci_high", "outliers", "launch_overhead_ms", "repeats",
              "repeat_medians_ms", "repeat_cv", "parity_reference", "parity_max_abs_err", "parity_max_rel_err",
              "parity_tolerance", "cpu_model", "onnx_version", "ray_version", "python_version"}
    assert all(row[k] is not None for k in filled), [k for k in filled if row[k] is None]
    # on a CPU: no GPU facts, no separate copies; host and device clocks are the same clock
    assert row["contended"] is None and row["copy_in_ms"] is None and row["launch_overhead_ms"] == 0
    # three repeats, each with its own runner, pooled into one row
    assert row["repeats"] == 3 and len(row["repeat_medians_ms"]) == 3 and row["iters"] >= 15
    assert row["latency_ms_ci_low"] <= row["latency_ms_median"] <= row["latency_ms_ci_high"]


def _shipped_torchvision_models() -> list[str]:
    names = {"squeezenet1_1", "mobilenet_v3_large"}  # used by the tests themselves
    for p in (REPO / "plans").glob("*.yaml"):
        for m in yaml.safe_load(p.read_text())["models"]:
            if isinstance(m, str) and m.startswith("torchvision:"):
                names.add(m.split(":", 1)[1])
            elif isinstance(m, dict) and "torchvision" in m:
                names.add(m["torchvision"])
    return sorted(names)


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_torchvision_models())
def test_shipped_models_stay_finite_and_close_to_fp32_in_fp16_and_bf16(name):
    """Random weights overflow or vanish in fp16 (MobileNetV3-Large: all zeros on a CPU, NaN on
    an H100) unless the BatchNorm statistics are re-estimated after building. The half-precision
    forwards run channels-last: this CPU has no fp16/bf16 instructions, and PyTorch's contiguous
    path took 5-6 s a forward for ResNet-50 where oneDNN's channels-last one takes 1.3 s."""
    import torch

    spec = ModelSpec(kind="torchvision", ref=name, name=name, input_shape=(3, 224, 224))
    store = ModelStore()
    last = torch.channels_last
    with torch.inference_mode():
        ref = store.torch_model(spec, "cpu", "fp32")(make_input(spec, 1, "fp32", "cpu", 0)).numpy()
        assert np.abs(ref).max() > 1e-3
        for dtype in ("fp16", "bf16"):
            model = store.torch_model(spec, "cpu", dtype).to(memory_format=last)
            y = model(make_input(spec, 1, dtype, "cpu", 0).to(memory_format=last)).float().numpy()
            assert np.isfinite(y).all(), (name, dtype)
            assert compare(y, ref)["parity_max_rel_err"] <= PARITY_TOLERANCE[dtype], (name, dtype)


@pytest.mark.parametrize("section, value, message", [
    ("parity", {"tolerance": {"fp61": 0.1}}, "parity.tolerance: unknown key 'fp61' (did you mean 'fp16'?)"),
    ("parity", {"tolerance": {"fp16": -1}}, "parity.tolerance.fp16: Input should be greater than 0"),
    ("parity", {"chek": True}, "parity: unknown key 'chek' (did you mean 'check'?)"),
    ("measure", {"target_rel_ci": 2}, "measure.target_rel_ci: Input should be less than 1"),
    ("measure", {"repeats": 0}, "measure.repeats: Input should be greater than or equal to 1"),
    ("measure", {"warmup_iters": 20, "warmup_max_iters": 5},
     "measure: warmup_max_iters (5) is smaller than warmup_iters (20)"),
    ("measure", {"iters": 100, "max_iters": 10}, "measure: iters (100) is larger than max_iters (10)"),
])
def test_bad_measure_and_parity_settings_are_located(section, value, message):
    data = {"name": "p", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": ["torch-eager"]}, section: value}
    with pytest.raises(PlanError) as err:
        parse_plan(data, source="p.yaml")
    assert f"p.yaml: {message}" in str(err.value)


@pytest.mark.gpu
def test_on_cuda_every_backend_passes_parity_and_rows_carry_gpu_facts():
    """The H100 case: MobileNetV3-Large in fp16 must not be NaN; every backend's output
    within tolerance of torch fp32 on the same GPU; NVML, copy and launch columns filled."""
    data = {"name": "g", "device": "cuda", "models": ["torchvision:mobilenet_v3_large"],
            "matrix": {"batch_sizes": [8], "dtypes": ["fp32", "fp16", "bf16"], "io": ["device"],
                       "backends": ["torch-eager", "torch-cudagraph",
                                    {"backend": "torch-eager", "label": "eager-host", "io": ["host"]},
                                    {"backend": "ort", "label": "ort-run", "io": ["host"]},
                                    {"backend": "ort", "label": "ort-graph",
                                     "options": {"io_binding": True, "cuda_graph": True}}]},
            "measure": {"warmup_iters": 5, "iters": 20, "warmup_max_s": 1, "max_time_s": 1, "repeats": 2}}
    store = ModelStore()
    rows = [run_trial(t, "cuda", store) for t in expand(parse_plan(data))]
    for r in rows:
        if r["backend"] == "ort" and r["dtype"] == "bf16":
            assert r["status"] == "skipped"
            continue
        assert r["status"] == "ok", (r["model"], r["label"], r["dtype"], r.get("error"))
        assert r["parity_max_rel_err"] <= r["parity_tolerance"]
        assert r["launch_overhead_ms"] > -0.01 and len(r["repeat_medians_ms"]) == 2
        try:
            import pynvml  # noqa: F401
        except ImportError:
            continue
        assert r["gpu_sm_clock_mhz_start"] > 0 and r["gpu_power_w_end"] > 0 and r["contended"] is False
    host = [r for r in rows if r["label"] == "eager-host"]
    assert host and all(r["copy_in_ms"] > 0 and r["copy_out_ms"] > 0 for r in host)
    assert all(r["copy_in_ms"] is None for r in rows if r["label"] == "torch-eager")


class FakeNvml:
    """NVML as seen from a GPU shared with ``pids`` (fault injection: no GPU here)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    def __init__(self, pids):
        self.pids = pids

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return uuid

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        from types import SimpleNamespace

        return [SimpleNamespace(pid=p) for p in self.pids]

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980 if which == 1 else 2619

    def nvmlDeviceGetTemperature(self, h, which):
        return 41

    def nvmlDeviceGetPowerUsage(self, h):
        return 123_456


@pytest.mark.parametrize("pids, contended, others", [
    ("me", False, []),                 # only us on the GPU
    ("me+1", True, [1]),               # another process too
    ([4242], False, []),               # in a container: one host PID, taken to be us
    ([4242, 4343], True, [4343]),      # in a container: two processes, so someone else is there
])
def test_a_gpu_shared_with_another_process_is_flagged_contended(monkeypatch, pids, contended, others):
    import os

    from workers.measure import envinfo, nvml

    me = os.getpid()
    pids = {"me": [me], "me+1": [me, 1]}[pids] if isinstance(pids, str) else pids
    monkeypatch.setattr(nvml, "load", lambda: FakeNvml(pids))
    watch = envinfo.GpuWatch("GPU-x")
    cols = watch.finish()
    assert cols["contended"] is contended and cols["gpu_other_pids"] == others
    assert cols["gpu_sm_clock_mhz_start"] == 1980 and cols["gpu_power_w_end"] == pytest.approx(123.456)
    assert set(cols) == set(envinfo.GPU_COLUMNS)


def test_without_nvml_the_gpu_columns_are_null(monkeypatch):
    from workers.measure import envinfo, nvml

    monkeypatch.setattr(nvml, "load", lambda: None)
    cols = envinfo.GpuWatch("GPU-x").finish()
    assert cols == dict.fromkeys(envinfo.GPU_COLUMNS)
