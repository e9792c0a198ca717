"""Load scenarios: several requests in flight, driven through a runner's lanes from host threads.

One request at a time is ``workers.scenarios._repeats`` (``workers.measure.timing``); this module is the rest.
A runner gives ``concurrency`` lanes (``Runner.lanes``); each lane lives on one host thread for the
whole trial (``LaneThreads``: ORT keeps its CUDA graph per thread) and serves one request at a time
to completion (its own stream synchronized). Policy, in the order it runs::

    warm-up, on every lane's thread:
        the lane's first ``serial_runs`` runs one lane at a time   # captures (ORT's CUDA graph) never overlap
        then max(1, measure.warmup_iters) runs, all lanes at once  # untimed

    offline(c lanes):
        t0 = now; every lane: while not (done >= min_requests and now - t0 >= min_duration_s):
            start = now; lane.run(); end = now                     # stop issuing at max_time_s
        window = last end - t0; throughput = requests * batch_size / window

    server(c lanes, rate):
        n = max(min_requests, ceil(rate * min_duration_s)); arrivals a_1 < ... < a_n: seeded gaps,
            exponential (poisson) or 1 / rate (constant)
        every lane: take the next request i (FIFO, a shared counter); sleep until t0 + a_i;
            start = now; lane.run(); end = now                     # stop taking at max_time_s
        latency_i = end_i - a_i            # from the SCHEDULED arrival: queueing counts (no coordinated omission)
        issue lag_i = start_i - max(a_i, when its lane was last free)   # the harness's own lateness
        schedule_rate = (n - 1) / (a_n - a_1); achieved_rate = (n - 1) / (last end - first end)

    find-peak(c lanes, bound):
        cap = offline requests/s with c lanes (a short run; no server rate above it can keep up)
        lo, hi = 0, cap
        while time is left (measure.max_time_s in all) and (hi - lo) > 2% of hi:
            r = (lo + hi) / 2; run server(r)
            passed = p99 <= bound and achieved_rate within 1% of schedule_rate
            lo, hi = (r, hi) if passed else (lo, r)
        peak_rate = lo (the highest rate that passed; null if none), peak_rate_fail = the lowest that failed
        (workers.scenarios._peak; with ``confident``, each probe judged on the p99's upper bound)

``throughput`` is samples per second as each scenario defines it: offline, completed samples over
the window; server, achieved_rate * batch_size; find-peak, peak_rate * batch_size.

A generation trial's lanes (``workers.generation.load``) return each request's token times: its row
also has TTFT (from the request's start; server: from its scheduled arrival), TPOT over every decode
step and tokens/s (``token_columns``); find-peak then bounds the p99 TTFT by ``latency_bound_ms`` and
the p99 TPOT by ``tpot_bound_ms``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.backends.base import Lane
from workers.contract import Trial
from workers.measure import energy, memory, p99bound, stats
from workers.row import Row
from workers.scenarios._session import Harness, LaneThreads
from workers.scenarios.base import DEFAULT, Measured

#: Waiting for an arrival sleeps until this close, then yields in a loop (sleep wakes late by ~0.1 ms).
SPIN_S = 0.001
#: A request that started more than this after it could have is counted in ``late_requests``.
LATE_S = 0.001


def _wait_until(deadline: float) -> None:
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left - SPIN_S if left > SPIN_S else 0)  # sleep(0) releases the GIL to the other lanes


def schedule(rate: float, arrival: str, seed: int, min_requests: int, min_s: float) -> np.ndarray:
    """Arrival times (s from the run's start) at ``rate``: at least ``min_requests`` of them, the last
    at ``min_s`` or later. Seeded: the same arguments give the same schedule, every time."""
    n = max(min_requests, math.ceil(rate * min_s))
    if arrival == "constant":
        return (np.arange(n, dtype=np.float64) + 1) / rate
    rng = np.random.default_rng([seed, 16])  # 16: this module's stream of the plan's seed
    gaps = rng.exponential(1.0 / rate, n)
    while gaps.sum() < min_s:  # a Poisson schedule of n arrivals can end early: more, from the same stream
        gaps = np.concatenate([gaps, rng.exponential(1.0 / rate, n // 10 + 1)])
    out = np.cumsum(gaps)
    return out[: max(min_requests, int(np.searchsorted(out, min_s)) + 1)]


@dataclass
class Run:
    """What one offline or server run recorded, per request (times in s from the run's start)."""

    start: np.ndarray
    end: np.ndarray
    lane: np.ndarray
    arrival: np.ndarray | None = None  # server only
    lag: np.ndarray | None = None  # server only
    scheduled: int = 0  # server: requests in the schedule (some unserved when the time limit hit)
    hit_max_time: bool = False
    window_s: float = 0.0
    #: what each request's ``Lane.run`` returned, in the order above: None for a lane that times only
    #: the whole request; a lane whose request has timings of its own (a first token, each later one)
    #: returns them, as ``time.perf_counter`` times (``t0``, the run's start, on that clock)
    marks: list[Any] = field(default_factory=list)
    t0: float = 0.0
    window: energy.LoadWindow | None = None  # the energy counter around the run

    @property
    def service_ms(self) -> np.ndarray:
        return (self.end - self.start) * 1e3

    @property
    def latency_ms(self) -> np.ndarray:
        base = self.start if self.arrival is None else self.arrival
        return (self.end - base) * 1e3


def offline(threads: LaneThreads, min_requests: int, min_s: float, max_s: float,
            meter: energy.Meter | None = None) -> Run:
    """Every lane busy until both minimums are met (or ``max_s`` passed); ``meter``: the GPU's energy
    counter, read as the run starts and ends (``Run.window``)."""
    k = len(threads.lanes)
    records: list[list[tuple[float, float, Any]]] = [[] for _ in range(k)]
    completed = itertools.count(1)  # next() is one C call under the GIL: a shared count without a lock
    t0 = [0.0]
    barrier = threading.Barrier(k, action=lambda: t0.__setitem__(0, time.perf_counter()))

    def job(i: int, lane: Lane) -> None:
        barrier.wait()
        start, append, run, stop, clock = t0[0], records[i].append, lane.run, threads.stop, time.perf_counter
        done = 0  # requests completed by all lanes, as of this lane's last completion
        while not stop.is_set():
            s = clock()
            if s - start >= max_s or (done >= min_requests and s - start >= min_s):
                return
            marks = run()
            e = clock()
            append((s, e, marks))
            done = next(completed)

    window = energy.LoadWindow(meter)
    with window:
        threads.run(job)
    base = t0[0]
    rows = sorted(((s - base, e - base, i, m) for i, rec in enumerate(records) for s, e, m in rec),
                  key=lambda r: r[:3])
    a = np.asarray([r[:3] for r in rows], dtype=np.float64).reshape(-1, 3)
    end = a[:, 1]
    window_s, energy_window = (float(end.max()) if end.size else 0.0), window
    return Run(start=a[:, 0], end=end, lane=a[:, 2].astype(np.int64), window_s=window_s,
               hit_max_time=bool(len(rows) < min_requests or window_s < min_s), marks=[r[3] for r in rows], t0=base,
               window=energy_window)


def server(threads: LaneThreads, arrivals: np.ndarray, max_s: float, meter: energy.Meter | None = None) -> Run:
    """Requests at their scheduled arrivals, FIFO, served by the first free lane; stops taking new
    requests ``max_s`` after the start (the rest of the schedule is then unserved).

    Between one request's end and the next one's start a lane does as little as it can (a queued
    request starts at once, its records are kept for later): that gap is service time the queue sees
    and the row does not (``bench/queue_theory.py`` measures it as ``handoff``)."""
    n = len(arrivals)
    k = len(threads.lanes)
    records: list[list[tuple[int, float, float, Any]]] = [[] for _ in range(k)]
    order = itertools.count()  # next() is one C call under the GIL: FIFO without a lock
    t0 = [0.0]
    barrier = threading.Barrier(k, action=lambda: t0.__setitem__(0, time.perf_counter()))
    arr = arrivals.tolist()

    def job(i: int, lane: Lane) -> None:
        barrier.wait()
        base, append, run, stop, clock = t0[0], records[i].append, lane.run, threads.stop, time.perf_counter
        while not stop.is_set():
            r = next(order)
            taken = clock()
            if r >= n or taken - base >= max_s:
                return
            due = base + arr[r]
            if taken < due:
                _wait_until(due)
                s = clock()
            else:
                s = taken  # queued: it starts now
            marks = run()
            e = clock()
            append((r, s, e, marks))

    window = energy.LoadWindow(meter)
    with window:
        threads.run(job)
    base = t0[0]
    start, end, lag = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    lanes = np.full(n, -1, dtype=np.int64)
    marks: list[Any] = [None] * n
    for i, rec in enumerate(records):
        if not rec:
            continue
        r, s, e = (np.asarray(c) for c in list(zip(*rec))[:3])
        start[r], end[r], lanes[r] = s - base, e - base, i
        for j, m in zip(r.tolist(), (x[3] for x in rec)):
            marks[j] = m
        free = np.concatenate([[base], e[:-1]])  # when the lane was last free: the start, then its last end
        lag[r] = s - np.maximum(base + arrivals[r], free)
    served = ~np.isnan(end)
    return Run(start=start[served], end=end[served], lane=lanes[served], arrival=arrivals[served],
               lag=lag[served], scheduled=n, hit_max_time=bool(served.sum() < n),
               window_s=float(np.nanmax(end)) if served.any() else 0.0,
               marks=[m for m, ok in zip(marks, served.tolist()) if ok], t0=base, window=window)


def server_columns(run: Run) -> Row:
    """The row columns of a server run: rates, issue lag, per-request arrays."""
    a = run.arrival if run.arrival is not None else np.empty(0)
    full = schedule_rate(a) if run.scheduled == len(a) else None
    ends = np.sort(run.end)
    achieved = float((len(ends) - 1) / (ends[-1] - ends[0])) if len(ends) > 1 and ends[-1] > ends[0] else None
    lag = run.lag if run.lag is not None else np.empty(0)
    return {
        "schedule_rate": full, "achieved_rate": achieved, "requests": len(run.end),
        "late_requests": int((lag > LATE_S).sum()),
        "issue_lag_ms_p99": float(np.percentile(lag, 99) * 1e3) if lag.size else None,
        "issue_lag_ms_max": float(lag.max() * 1e3) if lag.size else None,
        "request_arrival_s": a.tolist(),
    }


def schedule_rate(arrivals: np.ndarray) -> float | None:
    """A schedule's own rate: (n - 1) gaps over the time from its first arrival to its last."""
    span = float(arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return float((len(arrivals) - 1) / span) if span > 0 else None


def kept_schedule(cols: Row, rate_tol: float) -> bool:
    """The server kept up: every request served, at a rate within ``rate_tol`` of the schedule's own."""
    own, got = cols.get("schedule_rate"), cols.get("achieved_rate")
    return own is not None and got is not None and abs(got / own - 1) <= rate_tol


def token_columns(run: Run, batch_size: int) -> Row:
    """A generation run's columns (its lanes returned each request's token times; none: {}): TTFT from
    each request's start, or its scheduled arrival under server; TPOT over every decode step; tokens/s
    over the measured window; e2e from the same origin as TTFT to the last token."""
    if not run.marks or not isinstance(run.marks[0], list | tuple | np.ndarray):
        return {}  # a lane that times only the whole request (None), or one time per request
    times = [np.asarray(m, dtype=np.float64) - run.t0 for m in run.marks]
    base = run.arrival if run.arrival is not None else run.start
    ttft = (np.asarray([t[0] for t in times]) - base) * 1e3
    e2e = (np.asarray([t[-1] for t in times]) - base) * 1e3
    steps = np.concatenate([np.diff(t) for t in times]) * 1e3

    def pct(x: np.ndarray, q: float) -> float | None:
        return float(np.percentile(x, q)) if x.size else None

    return {"ttft_ms": pct(ttft, 50), "ttft_ms_p99": pct(ttft, 99), "ttft_samples_ms": ttft.tolist(),
            "tpot_ms": pct(steps, 50), "tpot_ms_p99": pct(steps, 99), "tpot_samples_ms": steps.tolist(),
            "e2e_ms": pct(e2e, 50),
            "tokens_per_s": sum(len(t) for t in times) * batch_size / run.window_s if run.window_s > 0 else None}


def run_columns(run: Run, batch_size: int, seed: int) -> Row:
    """The columns every offline or server row has: latency statistics, requests, per-request arrays
    (and a generation run's ``token_columns``)."""
    lat = stats.latency_stats(run.latency_ms.tolist(), batch_size, seed=seed)
    joules = run.window.columns(len(run.end), batch_size) if run.window else dict.fromkeys(energy.COLUMNS)
    order = np.argsort(run.arrival if run.arrival is not None else run.start, kind="stable")
    return {
        **lat, **joules, **p99bound.columns(run.latency_ms[order]), "iters": len(run.end),
        "samples_ms": run.latency_ms.tolist(), "requests": len(run.end),
        "measured_s": run.window_s, "timed_s": run.window_s, "hit_max_time": run.hit_max_time,
        "service_ms_mean": float(run.service_ms.mean()), "request_start_s": run.start.tolist(),
        "request_end_s": run.end.tolist(), "request_service_ms": run.service_ms.tolist(),
        "request_lane": run.lane.tolist(), **token_columns(run, batch_size),
    }


def server_at(threads: LaneThreads, trial: Trial, rate: float, max_s: float, meter: energy.Meter | None = None,
              min_requests: int | None = None) -> tuple[Row, Run]:
    """One server run at ``rate`` (at least ``min_requests``, default the trial's): its columns and its record."""
    arrivals = schedule(rate, trial.arrival, trial.seed, min_requests or trial.min_requests, trial.min_duration_s)
    run = server(threads, arrivals, max_s, meter)
    if not len(run.end):
        raise RuntimeError(f"the server run at {rate:g} requests/s served no request within {max_s:g} s")
    cols = {**run_columns(run, trial.batch_size, trial.seed), **server_columns(run)}
    cols["throughput"] = cols["achieved_rate"] * trial.batch_size if cols["achieved_rate"] else None
    return cols, run


def offline_run(threads: LaneThreads, trial: Trial, meter: energy.Meter | None = None) -> Row:
    """An offline run's row columns."""
    run = offline(threads, trial.min_requests, trial.min_duration_s, trial.measure.max_time_s, meter)
    cols = run_columns(run, trial.batch_size, trial.seed)
    cols["achieved_rate"] = len(run.end) / run.window_s
    cols["throughput"] = cols["achieved_rate"] * trial.batch_size
    return cols


def server_run(threads: LaneThreads, trial: Trial, meter: energy.Meter | None = None) -> Row:
    """A server run's row columns, at the trial's rate."""
    return server_at(threads, trial, float(trial.rate), trial.measure.max_time_s, meter)[0]


def measure(h: Harness, run: Callable[[LaneThreads, Trial, energy.Meter | None], Row]) -> Measured:
    """Set the runner and its lanes up, warm them, ``run`` the scenario on them, and return the
    row's columns and every lane's output (each is parity-checked). A generation trial's lanes are its
    generation path's (``workers.generation.load``)."""
    trial, ctx = h.trial, h.ctx
    if trial.new_tokens:
        from workers.generation import load

        return load.measure(h, run)
    host_mem = memory.HostPeak()
    try:
        with h.session() as s:
            s.open_lanes(trial.concurrency)  # held by the session alone: they go with the runner
            t_warm = time.perf_counter()
            warm = s.threads.warm_up(trial.measure.warmup_iters)  # type: ignore[union-attr]
            warmup_s = time.perf_counter() - t_warm
            s.watch()
            meter = energy.NvmlMeter(s.gpu_uuid) if h.on_gpu else None
            cols = run(s.threads, trial, meter)  # type: ignore[arg-type]
            gpu = s.gpu_columns()
            outputs = [lane.output() for lane in s.threads.lanes]  # type: ignore[union-attr]
            after = s.after()
    finally:
        host_peak = host_mem.finish()
    only = f"{DEFAULT} trials only (this one: {trial.scenario})"
    out = {"warmup_iters": warm, "setup_s": s.setup_s, "warmup_s": warmup_s, "repeats": 1,
           "gpu_mem_peak_bytes": after.peak, **after.memory, **host_peak, **gpu, **ctx.facts, **after.extra, **cols}
    if trial.profile:
        out["profile_error"] = f"profiles are recorded for {only}"
    return Measured(columns=out, outputs=outputs)
