"""The timing loop and its clocks.

Policy, in the order it runs (``measure``)::

    run warmup_iters iterations                        # at least this many, untimed
    while warm-up is not steady:                       # cuDNN autotuning, lazy allocation, clock ramp-up
        time one window of warmup_window iterations
        steady = |median(window) - median(previous window)| <= warmup_rel_tol * median(previous)
        stop at warmup_max_iters or warmup_max_s (the row's warmup_iters says how many were run)
    synchronize()
    while True:
        device_ms, host_ms = timer.time(step)          # one timed iteration; keep both
        enough = n >= iters and elapsed >= min_time_s
        if enough and (target_rel_ci is None or ci95(median) <= target_rel_ci * median):
            converged; break
        if elapsed >= max_time_s or n >= max_iters:    # a bound on slow or noisy trials; the row says so
            break

The confidence interval used to stop is the distribution-free order-statistic interval of the
median (``workers.measure.stats.median_ci_distribution_free``); it is evaluated every ~10% more samples,
between timed iterations, so checking costs the samples nothing.

Each timed iteration on the GPU records a CUDA event before and after ``step`` on the current
stream, then synchronizes on the end event before reading the host clock: the device time comes
from the events, the host time includes the whole launch. Iterations are not pipelined into each
other: every sample is the latency of one inference.

The timer and the clock are seams (as in ``torch.utils.benchmark``): tests pass fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from workers.contract import MeasureSpec
from workers.measure.stats import relative_ci


class Timer(Protocol):
    def time(self, fn: Callable[[], None]) -> tuple[float, float]:
        """Run ``fn`` once; return (device_ms, host_ms)."""

    def synchronize(self) -> None:
        """Wait for all queued device work."""


class HostTimer:
    """CPU device: the device clock is the host clock."""

    def time(self, fn: Callable[[], None]) -> tuple[float, float]:
        t0 = time.perf_counter()
        fn()
        ms = (time.perf_counter() - t0) * 1e3
        return ms, ms

    def synchronize(self) -> None:
        pass


class CudaTimer:
    """CUDA events around each iteration on the current stream; synchronize, then host clock."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time(self, fn: Callable[[], None]) -> tuple[float, float]:
        start, end = self._start, self._end
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        host_ms = (time.perf_counter() - t0) * 1e3
        return start.elapsed_time(end), host_ms

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()


#: Tiny eager kernels a process launches before its first GPU trial (``settle_launch_state``).
SETTLE_LAUNCHES = 256
_settled = False


def settle_launch_state() -> None:
    """Once per process, before its first GPU trial: launch SETTLE_LAUNCHES tiny kernels and wait.

    On an H200 and an H100 (BENCHMARKS.md, "A trial's place in its worker"), a process's CUDA-graph
    replays ran about 7% faster until the process had launched some 50 eager kernels, before or
    after the capture, and at the slower speed ever after. Idling and
    ``empty_cache`` did not restore the fast state. Any eager work does it: an eager trial, a
    parity reference, the next trial's set-up. So without this, only a worker's first trial could
    be fast, and a trial's place in its worker moved its result. The cause is below PyTorch.
    Costs a few milliseconds, once.
    """
    global _settled
    if _settled:
        return
    import torch

    z = torch.zeros(1, device="cuda")
    for _ in range(SETTLE_LAUNCHES):
        z = z + 1
    torch.cuda.synchronize()
    _settled = True


@dataclass
class Samples:
    warmup_iters: int
    device_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    hit_max_time: bool = False
    converged: bool = False
    warmup_s: float = 0.0  # wall time of the warm-up
    timed_s: float = 0.0  # wall time of the timed iterations (checks between them included)


def _steady(prev: list[float], cur: list[float], rel_tol: float) -> bool:
    a, b = float(np.median(prev)), float(np.median(cur))
    return a > 0 and abs(b - a) <= rel_tol * a


def warm_up(step: Callable[[], None], timer: Timer, *, warmup_iters: int, warmup_window: int,
            warmup_rel_tol: float, warmup_max_iters: int, warmup_max_s: float,
            clock: Callable[[], float]) -> int:
    """Run the warm-up policy; return the iterations it ran."""
    t0 = clock()
    for _ in range(warmup_iters):
        step()
    done = warmup_iters
    prev: list[float] | None = None
    while done + warmup_window <= warmup_max_iters and clock() - t0 < warmup_max_s:
        cur = [timer.time(step)[0] for _ in range(warmup_window)]
        done += warmup_window
        if prev is not None and _steady(prev, cur, warmup_rel_tol):
            break
        prev = cur
    return done


def measure(
    step: Callable[[], None],
    timer: Timer,
    spec: MeasureSpec,
    clock: Callable[[], float] = time.perf_counter,
    on_timed: Callable[[bool], None] | None = None,
) -> Samples:
    """Warm up until steady, then time ``step`` until the answer is stable (see the module doc).

    ``spec`` is the trial's ``measure`` settings (``repeats`` is the caller's business); its
    defaults are written once, in ``workers.contract.MeasureSpec``. ``on_timed(True)`` is called
    just before the timed loop (after the warm-up's work is synchronised) and ``on_timed(False)``
    just after it (its last iteration waited for): the energy counter's window.
    """
    t_warm = clock()
    used = warm_up(step, timer, warmup_iters=spec.warmup_iters, warmup_window=spec.warmup_window,
                   warmup_rel_tol=spec.warmup_rel_tol, warmup_max_iters=spec.warmup_max_iters,
                   warmup_max_s=spec.warmup_max_s, clock=clock)
    iters, min_time_s, max_time_s = spec.iters, spec.min_time_s, spec.max_time_s
    target_rel_ci, max_iters = spec.target_rel_ci, spec.max_iters
    timer.synchronize()
    out = Samples(warmup_iters=used)
    out.warmup_s = clock() - t_warm
    dev_ms, host_ms = out.device_ms, out.host_ms
    next_check = max(iters, 10)
    if on_timed:
        on_timed(True)
    t_start = clock()
    while True:
        dev, host = timer.time(step)
        dev_ms.append(dev)
        host_ms.append(host)
        n = len(dev_ms)
        elapsed = clock() - t_start
        if n >= iters and elapsed >= min_time_s:
            if target_rel_ci is None:
                out.converged = True
                break
            if n >= next_check:
                next_check = n + max(10, n // 10)
                if relative_ci(dev_ms) <= target_rel_ci:
                    out.converged = True
                    break
        if elapsed >= max_time_s:
            out.hit_max_time = True
            break
        if n >= max_iters:
            break
    out.timed_s = clock() - t_start
    if on_timed:
        on_timed(False)
    return out


def measure_copies(host_x: Any, dev_y: Any, device: str, iters: int = 20) -> dict[str, float]:
    """Median device time (CUDA events) of the host->device copy of the input and the
    device->host copy of the output, each timed alone in its own short loop.

    The copies are the ones the torch runners and ORT with IO binding do in an ``io: host``
    step (``x.to(device)``, ``y.cpu()``, from and to pageable host memory).
    """
    timer = CudaTimer()
    timer.synchronize()
    ins = [timer.time(lambda: host_x.to(device))[0] for _ in range(iters + 2)][2:]
    outs = [timer.time(lambda: dev_y.cpu())[0] for _ in range(iters + 2)][2:]
    return {"copy_in_ms": float(np.median(ins)), "copy_out_ms": float(np.median(outs))}


__all__ = ["CudaTimer", "HostTimer", "Samples", "Timer", "measure", "measure_copies", "warm_up"]
