"""A known slowdown injected into a runner's step (a backend entry's ``slowdown``): what a gate must find.

A fraction ``f`` of the step is added to every step, in the form a real regression of that kind of
step would take::

    calibrate: CALIBRATE_WARM untimed steps, then CALIBRATE_STEPS steps timed two ways:
        total  = median(step + synchronize)                 # one step's latency
        launch = median(step, not waited for)               # the host's time to issue it
    on a GPU, steps for CALIBRATE_S more, NVML's utilization read as they run (median of the reads)
    util < LAUNCH_BOUND_UTIL_PCT          -> "host"   # launch-bound: the GPU waits on the host, and
                                                      # device work would hide in its idle gaps
    util >= LAUNCH_BOUND_UTIL_PCT         -> "device" # GPU-bound: extra device work, a spin kernel
    no NVML reading: launch >= LAUNCH_BOUND_SHARE * total -> "host", else "device"
    on a CPU                              -> "host"
    the backend slows itself (sleep)      -> "backend" (its sleep lengthens by f; nothing calibrated)
    each step: extra = f * total, issued after the step's own work, inside the timed window
        device: torch.cuda._sleep(cycles) on the current stream (cycles per ms measured once), where
                the timer's end event follows it: after the step, so it runs behind the step's
                kernels even for a runner whose work went to a stream of its own (ORT's) and came
                back before ``step`` returned
        host:   a busy wait (a sleep's wake-up is ~0.1 ms late: too coarse for 2% of a 1 ms step)

The injected time is measured before warm-up, so it is a fraction of a cold step: the rows'
``slowdown_ms`` says what was added, and the measured ratio of a slowed arm to its twin is the
figure a detection benchmark compares with ``f``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from workers.row import Row

CALIBRATE_WARM = 5
CALIBRATE_STEPS = 15
CALIBRATE_S = 0.6
#: GPU utilization (NVML, % of time a kernel ran) below which a step is launch-bound: ``compare``
#: draws its line here too (its HOST_BOUND_UTIL_PCT), so a row's kind means the same in both
LAUNCH_BOUND_UTIL_PCT = 80.0
#: without NVML: launch time / step time above which a GPU step is launch-bound. A runner whose
#: step waits for its own stream (ORT) launches for its whole step, so NVML comes first.
LAUNCH_BOUND_SHARE = 0.5


def install(runner: Any, fraction: float, on_gpu: bool, gpu_uuid: str | None = None) -> Row:
    """Slow ``runner.step`` by ``fraction`` of a step (see the module's doc); the row's slowdown columns.
    The runner's own ``step`` is replaced on the instance, so every path that steps it is slowed."""
    if not fraction:
        return {}
    if runner.slows_itself:
        return {"slowdown_kind": "backend", "slowdown_ms": None}
    step = runner.step
    sync = _synchronize if on_gpu else _nothing
    for _ in range(CALIBRATE_WARM):
        step()
    sync()
    totals, launches = [], []
    for _ in range(CALIBRATE_STEPS):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        launches.append(t1 - t0)
        totals.append(t2 - t0)
    total, launch = statistics.median(totals), statistics.median(launches)
    extra_s = fraction * total
    util = _utilization(step, sync, gpu_uuid) if on_gpu else None
    if util is not None:
        kind = "device" if util >= LAUNCH_BOUND_UTIL_PCT else "host"
    else:
        kind = "device" if on_gpu and launch < LAUNCH_BOUND_SHARE * total else "host"
    added = _device_work(extra_s) if kind == "device" else _host_delay(extra_s)

    def slowed() -> None:
        step()
        added()

    runner.step = slowed
    return {"slowdown_kind": kind, "slowdown_ms": extra_s * 1e3}


def _utilization(step: Callable[[], None], sync: Callable[[], None], uuid: str | None) -> float | None:
    """NVML's GPU utilization while ``step`` runs one step at a time for CALIBRATE_S (the reads of its
    second half: NVML averages over up to a second); None without NVML."""
    from workers.measure.envinfo import gpu_utilization

    reads: list[int] = []
    t0 = time.perf_counter()
    next_read = t0 + CALIBRATE_S / 2
    while (now := time.perf_counter()) - t0 < CALIBRATE_S:
        step()
        sync()
        if now >= next_read:
            u = gpu_utilization(uuid)
            if u is not None:
                reads.append(u)
            next_read = now + 0.05
    return float(statistics.median(reads)) if reads else None


def _host_delay(seconds: float) -> Callable[[], None]:
    def wait() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return wait


def _device_work(seconds: float) -> Callable[[], None]:
    """A spin kernel of ``seconds`` on the current stream (its clock rate measured here, once)."""
    import torch

    probe = 1_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(probe)  # the first launch loads the kernel
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    end.synchronize()
    cycles = max(1, int(probe * seconds * 1e3 / max(start.elapsed_time(end), 1e-6)))
    return lambda: torch.cuda._sleep(cycles)


def _synchronize() -> None:
    import torch

    torch.cuda.synchronize()


def _nothing() -> None:
    pass
