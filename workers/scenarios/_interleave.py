"""Interleaved A/B: the arms of one unit measured in alternating rounds in one worker process.

The unit is its first trial, carrying the others in ``Trial.arms`` (``orchestrator.plan.interleave``
packs them). Its policy::

    for each of the ``builds`` blocks of consecutive rounds (1 by default: every round):
        set up every arm's runner (a RunnerSession each), kept for the block's rounds
            (device memory can't hold them all: OOM -> each round sets its arm's runner up again,
             and the rows say so: ab_runners_kept false)
        each arm, once per runner: the trial's warm-up policy (workers.measure.timing.warm_up)
        for each round r of the block (orders: workers.measure.paired.round_orders, from the seed):
            for each arm in that round's order:
                untimed steps for warmup_s (at least one), synchronize
                timed steps for round_s, at least min_round_iters (and at most measure.max_iters)
        each arm's runner torn down
    each arm: its samples (samples_ms, rounds in order), its per-round medians, and for every arm but
    the base the paired ratio of its round medians to the base's with its interval and verdict
    (workers.measure.paired)

Every output is parity-checked after timing, as a single-stream trial's is, and a graph backend's
checked for stale outputs (each arm's row its own). Not measured in these rows: energy, profiles,
the copies' own times and the repeat check (their windows are short and shared by the arms).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from workers.contract import Interleave, Trial
from workers.faults import oom_message
from workers.measure import envinfo, memory, paired, stale, stats
from workers.measure.timing import CudaTimer, HostTimer, Timer, warm_up
from workers.row import Row
from workers.scenarios._session import After, Harness, RunnerSession
from workers.scenarios.base import Measured


@dataclass
class Arm:
    """One arm's harness and what its rounds measured."""

    harness: Harness
    device_ms: list[list[float]] = field(default_factory=list)  # one list per round
    host_ms: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    warmup_iters: int = 0
    warmup_s: float = 0.0
    timed_s: float = 0.0
    setups: int = 0
    setup_s: float = 0.0
    gpu: list[Row] = field(default_factory=list)
    after: After | None = None
    output: Any = None
    second: Any = None  # the stale-output probe (workers.measure.stale)

    @property
    def trial(self) -> Trial:
        return self.harness.trial


def arm_name(trial: Trial) -> str:
    return trial.arm or trial.label


def measure(h: Harness) -> Measured:
    """Every arm of the unit ``h.trial`` (see the module's doc); the first's ``Measured`` carries the others'."""
    spec = h.trial.measure.interleave
    if spec is None:
        raise ValueError("an interleaved trial needs measure.interleave")
    members = [replace(h.trial, arms=()), *h.trial.arms]
    arms = [Arm(_harness(h, t)) for t in members]
    orders = paired.round_orders(len(arms), spec.rounds, h.trial.seed)
    timer: Timer = CudaTimer() if h.on_gpu else HostTimer()
    host_mem = memory.HostPeak()
    try:
        kept = _kept_rounds(arms, orders, spec, timer, h.trial.seed)
        if not kept:
            _rebuilt_rounds(arms, orders, spec, timer)
    finally:
        host_peak = host_mem.finish()
    base = _base_index(arms, spec)
    return _measured(arms, base, spec, kept, host_peak, h.trial.trial_id)


def _harness(h: Harness, trial: Trial) -> Harness:
    from workers.backends import get
    from workers.context import TrialContext

    if trial.trial_id == h.trial.trial_id:
        return Harness(h.runner_cls, replace(h.ctx, trial=trial), h.on_gpu)
    ctx = TrialContext(trial=trial, device=h.ctx.device, store=h.ctx.store, cpus=h.ctx.cpus)
    return Harness(get(trial.backend), ctx, h.on_gpu)


def _kept_rounds(arms: list[Arm], orders: list[list[int]], spec: Interleave, timer: Timer, seed: int) -> bool:
    """Every round with every arm's runner set up once per build block (``spec.builds`` blocks of
    consecutive rounds, the arms built in a seeded order in each but the first: a place in the build
    order is not an arm's for good); False (nothing kept) where device memory can't hold them all."""
    for k, block in enumerate(paired.build_blocks(len(orders), spec.builds)):
        built = list(range(len(arms)))
        if k:
            built = [int(i) for i in np.random.default_rng([seed, k, 0xB1D]).permutation(len(arms))]
        if not _kept_block(arms, [orders[r] for r in block], spec, timer, built):
            for i, arm in enumerate(arms):
                arms[i] = Arm(arm.harness)  # nothing of the blocks before is kept either
            return False
    return True


def _kept_block(arms: list[Arm], orders: list[list[int]], spec: Interleave, timer: Timer, built: list[int]) -> bool:
    """One build block: every arm's runner set up (in the order ``built``), its rounds, teardown;
    False where device memory can't hold every arm's runner."""
    with contextlib.ExitStack() as stack:
        sessions: dict[int, RunnerSession] = {}
        try:
            for i in built:
                sessions[i] = stack.enter_context(arms[i].harness.session())
                _set_up(arms[i], sessions[i], timer)
        except Exception as exc:
            if oom_message(exc) is None or len(arms) < 2:
                raise
            return False
        watches = {i: s.watch() for i, s in sessions.items()}
        for order in orders:
            for place, i in enumerate(order):
                _round(arms[i], sessions[i].runner.step, timer, spec, watches[i], place)
        for i, s in sessions.items():
            _finish(arms[i], s)
    return True


def _rebuilt_rounds(arms: list[Arm], orders: list[list[int]], spec: Interleave, timer: Timer) -> None:
    """Every round, each arm's runner set up for its turn and torn down after it."""
    for order in orders:
        for place, i in enumerate(order):
            with arms[i].harness.session() as s:
                _set_up(arms[i], s, timer)
                watch = s.watch()
                _round(arms[i], s.runner.step, timer, spec, watch, place)
                _finish(arms[i], s)


def _set_up(arm: Arm, s: RunnerSession, timer: Timer) -> None:
    """A runner just set up: counted, then warmed up by the trial's own warm-up policy."""
    m = arm.trial.measure
    arm.setups += 1
    arm.setup_s += s.setup_s
    t0 = time.perf_counter()
    arm.warmup_iters += warm_up(s.runner.step, timer, warmup_iters=m.warmup_iters, warmup_window=m.warmup_window,
                                warmup_rel_tol=m.warmup_rel_tol, warmup_max_iters=m.warmup_max_iters,
                                warmup_max_s=m.warmup_max_s, clock=time.perf_counter)
    timer.synchronize()
    arm.warmup_s += time.perf_counter() - t0


def _round(arm: Arm, step: Callable[[], None], timer: Timer, spec: Interleave, watch: Any, place: int) -> None:
    """One arm's turn in a round: its own short warm-up, then its timed window."""
    clock = time.perf_counter
    t0 = clock()
    step()
    arm.warmup_iters += 1
    while clock() - t0 < spec.warmup_s:
        step()
        arm.warmup_iters += 1
    timer.synchronize()
    arm.warmup_s += clock() - t0
    dev: list[float] = []
    cap = arm.trial.measure.max_iters
    if watch is not None:
        watch(True)
    t_start = clock()
    while len(dev) < cap and (len(dev) < spec.min_round_iters or clock() - t_start < spec.round_s):
        d, host = timer.time(step)
        dev.append(d)
        arm.host_ms.append(host)
    arm.timed_s += clock() - t_start
    if watch is not None:
        watch(False)
    arm.device_ms.append(dev)
    arm.positions.append(place)


def _finish(arm: Arm, s: RunnerSession) -> None:
    """After an arm's last timing on this runner: its GPU facts, output, memory (before teardown), and
    a second input through its timed buffers (graph backends: the stale-output check)."""
    arm.gpu.append(s.gpu_columns())
    arm.output = s.runner.output()
    arm.after = s.after()
    arm.second = stale.probe(s.runner)


def _base_index(arms: list[Arm], spec: Interleave) -> int:
    """The base arm: ``interleave.base`` where the unit has it, else its first (the driver puts the base first)."""
    names = [arm_name(a.trial) for a in arms]
    return names.index(spec.base) if spec.base in names else 0


def _measured(arms: list[Arm], base: int, spec: Interleave, kept: bool, host_peak: Row, unit_id: str) -> Measured:
    medians = [[stats.median(r) for r in a.device_ms] for a in arms]
    out = []
    for i, arm in enumerate(arms):
        ctx, after = arm.harness.ctx, arm.after
        dev = [x for r in arm.device_ms for x in r]
        lat = stats.latency_stats(dev, ctx.batch_size, seed=ctx.seed)
        host_median = stats.median(arm.host_ms)
        judged: Row = {"ab_ratio": None, "ab_ratio_low": None, "ab_ratio_high": None, "ab_verdict": None}
        # kept runners: the build blocks are the units; rebuilt every round: each round is a build
        builds = spec.builds if kept else 1
        ratio = paired.paired_ratio(medians[base], medians[i], spec.confidence, builds=builds) if i != base else None
        if ratio is not None:
            judged = {"ab_ratio": ratio[0], "ab_ratio_low": ratio[1], "ab_ratio_high": ratio[2],
                      "ab_verdict": paired.verdict(*ratio, spec.threshold)}
        cols: Row = {
            "warmup_iters": arm.warmup_iters, "iters": len(dev), "samples_ms": dev, "host_samples_ms": arm.host_ms,
            "host_ms_median": host_median, "launch_overhead_ms": host_median - lat["latency_ms_median"],
            "hit_max_time": False, "converged": None, "repeats": 1,
            "setup_s": arm.setup_s, "warmup_s": arm.warmup_s, "timed_s": arm.timed_s,
            "gpu_mem_peak_bytes": after.peak if after else None,
            **(memory.merge([after.memory]) if after else {}), **host_peak,
            **envinfo.merge_watches(arm.gpu), "timing_cpu": None,
            **lat, **ctx.facts, **(after.extra if after else {}),
            "input_pool": 1, "copy_in_ms": None, "copy_out_ms": None,
            "ab_group": unit_id, "ab_base": arm_name(arms[base].trial), "ab_rounds": len(arm.device_ms),
            "round_medians_ms": medians[i], "round_iters": [len(r) for r in arm.device_ms],
            "round_positions": arm.positions, "ab_runners_kept": kept, "ab_setups": arm.setups, **judged,
        }
        out.append(Measured(columns=cols, outputs=[arm.output], second=arm.second))
    first = out[0]
    return Measured(columns=first.columns, outputs=first.outputs, arms=tuple(out[1:]))
