"""The timing loop and its clocks.

Policy, in the order it runs::

    for i in range(warmup_iters):         # cuDNN autotuning, lazy allocation, clock ramp-up
        step()
    synchronize()
    while True:
        device_ms, host_ms = timer.time(step)   # one timed iteration
        keep both
        if n >= iters and elapsed >= min_time_s: break
        if elapsed >= max_time_s: break          # a bound on slow trials; the row says so

Each timed iteration on the GPU records a CUDA event before and after ``step`` on the
current stream, then synchronizes on the end event before reading the host clock, so the
device time comes from the events and the host time includes the whole launch. Iterations are
not pipelined into each other: every sample is the latency of one inference.

The timer is a seam (as in ``torch.utils.benchmark``): tests pass a fake with known samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


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


@dataclass
class Samples:
    warmup_iters: int
    device_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    hit_max_time: bool = False


def measure(
    step: Callable[[], None],
    timer: Timer,
    *,
    warmup_iters: int,
    iters: int,
    min_time_s: float = 0.0,
    max_time_s: float = 60.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Samples:
    """Warm up, then time ``step`` until ``iters`` and ``min_time_s`` are both met."""
    for _ in range(warmup_iters):
        step()
    timer.synchronize()
    out = Samples(warmup_iters=warmup_iters)
    t_start = clock()
    while True:
        dev, host = timer.time(step)
        out.device_ms.append(dev)
        out.host_ms.append(host)
        elapsed = clock() - t_start
        if len(out.device_ms) >= iters and elapsed >= min_time_s:
            break
        if elapsed >= max_time_s:
            out.hit_max_time = True
            break
    return out
