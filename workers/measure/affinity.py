"""A GPU trial's timing thread, pinned to one CPU near its GPU while it warms up and times.

A launch-bound step (eager mode at batch 1: the GPU waits on Python) runs at the host's pace, and a
thread the scheduler moves between CPUs is both slower and less steady: on the H200 VM a
hand-written eager loop moved 40-61% between fresh processes unpinned and 7-14% pinned to one CPU,
and ran 7-22% faster pinned (``bench/host_jitter.py``; BENCHMARKS.md, "A/A on the GPU"). So the
thread that times a single-stream GPU trial is pinned to one CPU for its warm-up and timed loop
only (setup, compiles, exports and everything after keep every CPU the process has)::

    local = the CPUs sysfs lists as local to the GPU's PCI device, among those this process may
            use (all of those where sysfs can't tell)
    cpu   = local[(2 * index + 1) * len(local) // (2 * count)]   # index, count: the GPU among the
                                                                   # host's GPUs (NVML)

so the GPUs of one host take CPUs spread over their local set, none the first of it (where
interrupts usually land). The sampler threads started while it is pinned run on the others.
``INFER_ORCH_PIN_TIMING=0`` turns it off (the driver refuses values other than 0 and 1); the row's
``timing_cpu`` says which CPU it was (null: not pinned).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workers.measure import nvml

#: While a thread is pinned: the CPUs left for the other threads (``away_from_timing``).
_others: set[int] | None = None


def choose(local: list[int], index: int, count: int) -> int | None:
    """The CPU for the GPU ``index`` of ``count`` on the host, from its ``local`` CPUs (see the module doc)."""
    if not local or count < 1:
        return None
    local = sorted(local)
    return local[min(len(local) - 1, (2 * (index % count) + 1) * len(local) // (2 * count))]


def _cpulist(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def timing_cpu(uuid: str | None) -> int | None:
    """The CPU to time GPU ``uuid``'s trials on, or None (off, not Linux, or NVML can't tell)."""
    if os.environ.get("INFER_ORCH_PIN_TIMING", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    nv, h = nvml.load(), nvml.handle(uuid)
    if nv is None or h is None:
        return None
    try:
        index, count = nv.nvmlDeviceGetIndex(h), nv.nvmlDeviceGetCount()
    except Exception:
        return None
    return choose(local_cpus(nv, h), index, count)


def local_cpus(nv: Any, h: Any) -> list[int]:
    """The CPUs sysfs lists as local to the PCI device of NVML handle ``h``, among those this process
    may use; all of those where sysfs can't tell (a container may hide it)."""
    allowed = os.sched_getaffinity(0)
    try:
        bus = nv.nvmlDeviceGetPciInfo(h).busId
        bus = (bus.decode() if isinstance(bus, bytes) else bus).lower()[-12:]  # 0000:19:00.0
        local = [c for c in _cpulist(Path(f"/sys/bus/pci/devices/{bus}/local_cpulist").read_text()) if c in allowed]
    except Exception:
        local = []
    return local or sorted(allowed)


@contextmanager
def pinned(cpu: int | None) -> Iterator[int | None]:
    """The calling thread on ``cpu`` inside the block (nothing where ``cpu`` is None); its own
    affinity back after."""
    if cpu is None:
        yield None
        return
    global _others
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # Linux: pid 0 is the calling thread
    _others = (before - {cpu}) or before
    try:
        yield cpu
    finally:
        _others = None
        os.sched_setaffinity(0, before)


def away_from_timing() -> None:
    """Called first on a helper thread: off the timing thread's CPU, if one is pinned now (a new
    thread inherits its creator's affinity, and the sampler is started from the timing thread)."""
    others = _others
    if others is not None:
        os.sched_setaffinity(0, others)
