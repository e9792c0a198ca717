"""Energy per sample (workers/measure/energy.py): the window and method logic with a fake NVML meter on this
CPU, the timing loop's hook around its timed iterations, and on a GPU the real counter against
sampled power."""

from __future__ import annotations

import pytest
from helpers import run_all, trials_for

from workers.contract import MeasureSpec
from workers.measure import energy
from workers.measure.timing import measure
from workers.schema import NAMES


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeMeter:
    """A GPU drawing ``watts`` while the clock moves; a counter and/or power as asked."""

    def __init__(self, clock: Clock, watts: float = 300.0, counter: bool = True, power: str | None = "instant"):
        self.clock, self.watts, self.counter = clock, watts, counter
        self.power_source = power

    def energy_mj(self):
        return self.clock() * self.watts * 1000 if self.counter else None

    def power_w(self):
        return self.watts if self.power_source else None


def stepper(clock: Clock, s: float):
    def step():
        clock.t += s
    return step


def test_every_energy_column_is_in_the_schema():
    assert set(energy.COLUMNS) <= NAMES


def test_a_long_timed_loop_is_its_own_energy_window():
    clock = Clock()
    meter = FakeMeter(clock)
    window = energy.TimedWindow(meter, clock=clock)
    window(True)
    clock.t += 2.0  # 200 iterations of 10 ms
    window(False)
    calls = []
    out = energy.columns(meter, window, iters=200, batch_size=4, step=lambda: calls.append(1),
                         synchronize=lambda: None, clock=clock)
    assert calls == []  # nothing more was run
    assert out["energy_method"] == "nvml_energy_counter: timed loop"
    assert out["energy_j_per_sample"] == pytest.approx(300 * 2.0 / 800)
    assert out["gpu_power_w_avg"] == pytest.approx(300) and out["energy_iters"] == 200
    assert out["energy_j_per_sample_integral"] is None and out["energy_note"] is None


def test_a_short_timed_loop_is_extended_for_energy_alone():
    clock = Clock()
    meter = FakeMeter(clock, watts=200)
    window = energy.TimedWindow(meter, clock=clock)
    window(True)
    clock.t += 0.05
    window(False)
    out = energy.columns(meter, window, iters=5, batch_size=2, step=stepper(clock, 0.01),
                         synchronize=lambda: None, clock=clock)
    assert out["energy_method"] == "nvml_energy_counter: iterations after timing"
    assert out["energy_iters"] == 100 and out["energy_window_s"] == pytest.approx(1.0)
    assert out["energy_j_per_sample"] == pytest.approx(200 * 1.0 / 200)
    assert out["gpu_power_w_avg"] == pytest.approx(200)


def test_without_a_counter_sampled_power_is_integrated():
    """The sampler thread reads a real clock, so this one runs a real (short) window."""
    import time

    meter = FakeMeter(Clock(), watts=150, counter=False)
    out = energy.columns(meter, energy.TimedWindow(meter), iters=3, batch_size=1,
                         step=lambda: time.sleep(0.002), synchronize=lambda: None, min_s=0.2)
    assert out["energy_method"].startswith("instant power sampled every 10 ms")
    assert out["gpu_power_w_avg"] == pytest.approx(150, rel=0.05)
    assert out["energy_j_per_sample"] == out["energy_j_per_sample_integral"]
    assert out["energy_j_per_sample"] == pytest.approx(150 * out["energy_window_s"] / out["energy_iters"], rel=0.1)


def test_no_counter_and_no_power_is_null_with_the_reason():
    meter = FakeMeter(Clock(), counter=False, power=None)
    out = energy.columns(meter, energy.TimedWindow(meter), iters=3, batch_size=1, step=lambda: None,
                         synchronize=lambda: None)
    assert {k: v for k, v in out.items() if v is not None} == {
        "energy_note": "NVML reports neither an energy counter nor power for this GPU"}


def test_trapezoids():
    assert energy.integrate([(0, 100), (1, 300), (3, 300)]) == pytest.approx(200 + 600)
    assert energy.integrate([(0, 100)]) is None


def test_the_timing_hook_brackets_the_timed_iterations_only():
    clock = Clock()
    events = []

    class Timer:
        def time(self, fn):
            fn()
            events.append("timed")
            return 1.0, 1.0

        def synchronize(self):
            events.append("sync")

    def step():
        clock.t += 0.001
        events.append("step")

    spec = MeasureSpec(warmup_iters=2, warmup_max_iters=2, iters=3, target_rel_ci=None)
    measure(step, Timer(), spec, clock=clock, on_timed=lambda starting: events.append(f"on_timed:{starting}"))
    assert events.index("on_timed:True") == events.index("sync") + 1
    timed = events[events.index("on_timed:True") + 1:]
    assert timed == ["step", "timed"] * 3 + ["on_timed:False"]


def test_cpu_trials_have_no_energy_and_say_why():
    (row,) = run_all(trials_for(["torch-eager"], io=("host",)))
    assert row["status"] == "ok"
    assert all(row[k] is None for k in energy.COLUMNS if k != "energy_note")
    assert row["energy_note"] == "not a GPU trial"


@pytest.mark.gpu
def test_gpu_trial_has_energy_from_the_counter():
    """A real GPU trial: energy per sample and average power are there, from NVML's counter
    (Volta and later), plausible for one board (between 5 W and 1500 W)."""
    import torch

    from workers.models.build import ModelStore
    from workers.trial import run_trial

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    (trial,) = trials_for(["torch-eager"], models=("torchvision:resnet18",), io=("device",), device="cuda")
    row = run_trial(trial, "cuda", ModelStore(), cpus=1)
    assert row["status"] == "ok", row["error"]
    assert row["energy_method"].startswith("nvml_energy_counter"), row["energy_note"]
    assert row["energy_j_per_sample"] > 0 and 5 < row["gpu_power_w_avg"] < 1500
    assert row["energy_window_s"] >= energy.MIN_WINDOW_S
    if row["energy_method"].endswith("after timing"):
        assert row["energy_j_per_sample_integral"] is not None


@pytest.mark.gpu
def test_gpu_counter_and_sampled_power_agree():
    """The energy check: a long GPU-bound window (ResNet-50, batch 256, 5 s), the counter's energy
    and the integral of power sampled every 10 ms agree within 5%."""
    import torch
    import torchvision

    from workers.measure import envinfo

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = torchvision.models.resnet50().cuda().eval().half()
    x = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.half)

    def step():
        with torch.inference_mode():
            model(x)

    for _ in range(5):
        step()
    meter = energy.NvmlMeter(envinfo.device_facts("cuda")["gpu_uuid"])
    if meter.energy_mj() is None or meter.power_source is None:
        pytest.skip("this GPU lacks NVML's energy counter or power reads")
    out = energy.columns(meter, energy.TimedWindow(meter), iters=0, batch_size=256, step=step,
                         synchronize=torch.cuda.synchronize, min_s=5.0)
    print(out)
    assert out["energy_method"] == "nvml_energy_counter: iterations after timing"
    assert out["energy_j_per_sample_integral"] == pytest.approx(out["energy_j_per_sample"], rel=0.05)


def test_report_gives_samples_per_joule_next_to_samples_per_second():
    from orchestrator.answers.report import COLUMNS, row_cells

    row = {"model": "m", "batch_size": 8, "dtype": "fp16", "io": "device", "label": "ort", "status": "ok",
           "latency_ms_median": 2.0, "latency_ms_p99": 3.0, "throughput": 4000.0, "energy_j_per_sample": 0.025,
           "speedup": None, "speedup_vs": None}
    cells = dict(zip(COLUMNS, row_cells(row)))
    assert COLUMNS.index("samples/J") == COLUMNS.index("samples/s") + 1
    assert cells["samples/s"] == "4000.0" and cells["samples/J"] == "40.0"
    assert dict(zip(COLUMNS, row_cells({**row, "energy_j_per_sample": None})))["samples/J"] == "-"


def test_a_load_run_is_its_own_energy_window_per_request_and_per_sample():
    clock = Clock()
    meter = FakeMeter(clock, watts=250.0)
    window = energy.LoadWindow(meter, clock=clock)
    with window:
        clock.t += 2.0  # the run: 400 requests of batch 8 in 2 s
    out = window.columns(requests=400, batch_size=8)
    assert out["energy_method"] == "nvml_energy_counter: the measured run"
    assert out["energy_j_per_request"] == pytest.approx(250 * 2.0 / 400)
    assert out["energy_j_per_sample"] == pytest.approx(250 * 2.0 / 3200)
    assert out["gpu_power_w_avg"] == pytest.approx(250) and out["energy_iters"] == 400
    short = energy.LoadWindow(meter, clock=clock)
    with short:
        clock.t += 0.2
    got = short.columns(requests=40, batch_size=8)
    assert got["energy_j_per_request"] is None and "under the counter's 1 s" in got["energy_note"]
    assert energy.LoadWindow(None).columns(1, 1)["energy_note"] == "not a GPU trial"
