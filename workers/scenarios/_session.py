"""A runner's life cycle, written once, for every scenario: ``RunnerSession``.

::

    with harness.session() as s:      # a fresh runner; device memory tracked from here; runner.setup() (timed),
                                      # then the trial's slowdown put in its step (workers/measure/slowdown.py)
        threads = s.open_lanes(k)     # load scenarios: k lanes, one host thread each (counted in setup_s)
        watch = s.watch()             # NVML facts and the contention check around the timing (GPUs)
        ... the scenario's own timing ...
        gpu = s.gpu_columns()         # the watch's columns (null off a GPU)
        after = s.after()             # runner.extra_columns(), the memory columns: before teardown
    # on leaving, always: the watch's sampler stopped, the lane threads joined, runner.teardown(),
    # the device's cached memory released

What a scenario measured comes back as ``base.Measured``: the row's columns, the outputs to
parity-check and the stale-output probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from workers.measure import envinfo, memory, slowdown
from workers.row import Row

if TYPE_CHECKING:
    from workers.backends.base import Lane, Runner
    from workers.context import TrialContext
    from workers.contract import Trial



class LaneThreads:
    """One long-lived host thread per lane: ``run(job)`` calls ``job(i, lane)`` on every lane's own
    thread at once and returns when all are done; an exception in one is raised here, the others
    told to stop (``stop`` is set)."""

    def __init__(self, lanes: list[Lane]) -> None:
        self.lanes = lanes
        self.stop = threading.Event()
        self._jobs: list[Any] = [None] * len(lanes)
        self._go = [threading.Event() for _ in lanes]
        self._done = [threading.Event() for _ in lanes]
        self._errors: list[BaseException | None] = [None] * len(lanes)
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"lane-{i}")
                         for i in range(len(lanes))]
        for t in self._threads:
            t.start()

    def _loop(self, i: int) -> None:
        while True:
            self._go[i].wait()
            self._go[i].clear()
            job = self._jobs[i]
            if job is None:
                return
            try:
                job(i, self.lanes[i])
            except BaseException as exc:  # raised again on the caller's thread
                self._errors[i] = exc
                self.stop.set()
            self._done[i].set()

    def warm_up(self, iters: int) -> int:
        """Every lane's ``serial_runs`` one lane at a time, then ``max(1, iters)`` runs on all at once;
        the runs made in all."""
        lock = threading.Lock()
        counts = [0] * len(self.lanes)

        def job(i: int, lane: Lane) -> None:
            with lock:
                for _ in range(lane.serial_runs):
                    lane.run()
            counts[i] += lane.serial_runs

        self.run(job)
        barrier = threading.Barrier(len(self.lanes))

        def concurrent(i: int, lane: Lane) -> None:
            barrier.wait()
            for _ in range(max(1, iters)):
                lane.run()
            counts[i] += max(1, iters)

        self.run(concurrent)
        return sum(counts)

    def run(self, job: Callable[[int, Lane], None]) -> None:
        self.stop.clear()
        for i in range(len(self.lanes)):
            self._jobs[i], self._errors[i] = job, None
            self._done[i].clear()
            self._go[i].set()
        for d in self._done:
            d.wait()
        err = next((e for e in self._errors if e is not None), None)
        if err is not None:
            raise err

    def close(self) -> None:
        for i in range(len(self.lanes)):
            self._jobs[i] = None
            self._go[i].set()
        for t in self._threads:
            t.join(timeout=60)


@dataclass(frozen=True)
class After:
    """What a session reads from a runner after timing, before teardown: the backend's own columns,
    the device memory columns and the peak (``gpu_mem_peak_bytes``)."""

    extra: Row
    memory: Row
    peak: int | None


@dataclass(frozen=True)
class Harness:
    """What a scenario measures with: the backend's runner class, the trial's context, on a GPU or not."""

    runner_cls: type[Runner]
    ctx: TrialContext
    on_gpu: bool

    @property
    def trial(self) -> Trial:
        return self.ctx.trial

    def session(self) -> RunnerSession:
        """A fresh runner's life cycle (see the module's doc)."""
        return RunnerSession(self)


class RunnerSession:
    """One runner from construction to teardown, its device memory and GPU watched (the module's doc)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.setup_s = 0.0
        self.threads: LaneThreads | None = None
        self._watch: envinfo.GpuWatch | None = None

    def __enter__(self) -> RunnerSession:
        h = self.harness
        self.runner = h.runner_cls(h.ctx, h.runner_cls.Options.model_validate(h.trial.options))
        self.gpu_uuid = envinfo.device_facts("cuda")["gpu_uuid"] if h.on_gpu else None
        self.mem = memory.TrialMemory("cuda" if h.on_gpu else "cpu", self.gpu_uuid)
        t0 = time.perf_counter()
        try:
            self.runner.setup()
        except BaseException:
            self._close()
            raise
        self.setup_s = time.perf_counter() - t0
        try:  # a known slowdown, where the trial asks for one: calibrated on the runner just set up
            self.slowdown = slowdown.install(self.runner, h.trial.slowdown, h.on_gpu, self.gpu_uuid)
        except BaseException:
            self._close()
            raise
        return self

    def open_lanes(self, k: int) -> LaneThreads:
        """``k`` of the runner's lanes, each on its own host thread (building the lanes counts as setup)."""
        t0 = time.perf_counter()
        lanes = self.runner.lanes(k)
        self.setup_s += time.perf_counter() - t0
        self.threads = LaneThreads(lanes)
        return self.threads

    def watch(self) -> envinfo.GpuWatch | None:
        """Start the GPU watch (on a GPU; None elsewhere): NVML facts now, at ``gpu_columns`` and,
        called with True/False around a timed loop, the contention sampler in between."""
        self._watch = envinfo.GpuWatch(self.gpu_uuid) if self.harness.on_gpu else None
        return self._watch

    def gpu_columns(self) -> Row:
        return self._watch.finish() if self._watch else dict.fromkeys(envinfo.GPU_COLUMNS)

    def after(self) -> After:
        extra = {**self.runner.extra_columns(), **self.slowdown}
        if self.harness.trial.dtype == "fp32":  # TF32 is about fp32 arithmetic: other rows leave it null
            extra["math_effective"] = self.runner.math_effective()
        mem_cols = self.mem.columns()  # before teardown: ORT's arena is freed with its session
        peak = mem_cols.pop("peak")
        return After(extra=extra, memory=mem_cols, peak=peak)

    def _close(self) -> None:
        try:
            if self._watch is not None:
                self._watch.close()  # its sampler thread, where timing raised before it could stop it
            if self.threads is not None:
                self.threads.close()
                self.threads = None  # the lanes' graphs and buffers go with the runner's
            self.runner.teardown()
        finally:
            del self.runner
            self.mem.release()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()
