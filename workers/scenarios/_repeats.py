"""One request at a time, repeated: the default scenario's measurement (``workers.measure.timing`` is its
timing policy). Each repeat is a fresh runner (a ``RunnerSession``), timed, its output read; the
last repeat also gives the energy columns (on a GPU), the profile (where asked) and the
stale-output probe. The row's columns merge every repeat's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.contract import FILES_KEY, PROFILE_ITERS, PROFILE_MAX_BYTES, Trial, profile_path
from workers.measure import affinity, energy, envinfo, memory, pool, stale, stats
from workers.measure.timing import CudaTimer, HostTimer, Samples, measure_copies
from workers.measure.timing import measure as timed_loop
from workers.row import Row
from workers.scenarios._session import After, Harness
from workers.scenarios.base import Measured


@dataclass
class Repeat:
    """What one repeat measured."""

    samples: Samples
    setup_s: float
    gpu: Row
    timing_cpu: int | None
    output: Any
    after: After
    copies: Row
    profile: Row = field(default_factory=dict)
    pool: Row = field(default_factory=dict)
    energy: Row = field(default_factory=dict)
    stale: Row | None = None


def measure(h: Harness) -> Measured:
    """Every repeat of the trial, and the row's columns from all of them."""
    ctx, n = h.ctx, h.trial.measure.repeats
    host_mem = memory.HostPeak()  # this trial's own RSS peak: setup and timing of every repeat
    try:  # the last repeat is profiled when asked, after its timing
        repeats = [_once(h, first=i == 0, last=i == n - 1,
                         profile=host_mem if h.trial.profile and i == n - 1 else None) for i in range(n)]
    finally:
        host_peak = host_mem.finish()  # before parity, whose reference model is not the trial's
    first, last = repeats[0], repeats[-1]
    dev = [x for r in repeats for x in r.samples.device_ms]
    host = [x for r in repeats for x in r.samples.host_ms]
    medians = [stats.median(r.samples.device_ms) for r in repeats]
    lat = stats.latency_stats(dev, ctx.batch_size, seed=ctx.seed)
    host_median = stats.median(host)
    out = {
        "warmup_iters": sum(r.samples.warmup_iters for r in repeats),
        "iters": len(dev),
        "samples_ms": dev,
        "host_samples_ms": host,
        "host_ms_median": host_median,
        "launch_overhead_ms": host_median - lat["latency_ms_median"],
        "hit_max_time": any(r.samples.hit_max_time for r in repeats),
        "converged": all(r.samples.converged for r in repeats),
        "repeats": len(repeats),
        "repeat_medians_ms": medians,
        "repeat_cv": stats.between_run_cv(medians),
        "repeat_rel_ci": [_finite_or_none(stats.relative_ci(r.samples.device_ms)) for r in repeats],
        # this process's own measurement; a trial measured in several processes merges them over these
        "process_repeats": 1, "process_pids": None, "process_medians_ms": None, "process_cv": None,
        "setup_s": first.setup_s,
        "warmup_s": sum(r.samples.warmup_s for r in repeats),
        "timed_s": sum(r.samples.timed_s for r in repeats),
        "gpu_mem_peak_bytes": max((r.after.peak for r in repeats if r.after.peak is not None), default=None),
        **memory.merge([r.after.memory for r in repeats]),
        **host_peak,
        **first.copies,
        **envinfo.merge_watches([r.gpu for r in repeats]), "timing_cpu": last.timing_cpu,
        **lat,
        **ctx.facts,
        **first.after.extra,
        **_pool_columns(h, first.pool, dev),
        **last.profile,
        **last.energy,
    }
    return Measured(columns=out, outputs=[r.output for r in repeats], second=last.stale)


def _once(h: Harness, first: bool, last: bool, profile: memory.HostPeak | None) -> Repeat:
    """One repeat (see the module's doc). ``profile``: profile it after all that, the trial's host
    memory window (``profile``) closed first, so nothing measured includes the profiler."""
    ctx, on_gpu = h.ctx, h.on_gpu
    with h.session() as s:
        gpu_uuid = s.gpu_uuid  # the runner is s.runner alone: it goes at teardown, not with this frame
        timer = CudaTimer() if on_gpu else HostTimer()
        watch = s.watch()
        meter = energy.NvmlMeter(gpu_uuid) if on_gpu and last else None
        window = energy.TimedWindow(meter) if meter else None
        timed = [f for f in (window, watch) if f is not None]  # the energy counter's window, the sampler's
        cpu = affinity.timing_cpu(gpu_uuid) if on_gpu else None
        spec, n = ctx.trial.measure, ctx.trial.measure.input_pool
        feed = s.runner.stage_pool(pool.seeds(ctx.trial)) if n > 1 else None  # staged before timing
        step = pool.cycling(s.runner, n) if n > 1 else s.runner.step
        with affinity.pinned(cpu):  # warm-up and timed loop on one CPU near the GPU (workers/measure/affinity.py)
            samples = timed_loop(step, timer, spec,
                                 on_timed=(lambda starting: [f(starting) for f in timed]) if timed else None)
            repeated = timed_loop(pool.cycling(s.runner, 1), timer, spec) if spec.repeat_check and first else None
        gpu = s.gpu_columns()
        if n > 1:  # the trial's own input once more, so parity checks it (not timed)
            s.runner.use(0)
            s.runner.step()
        pooled: Row = {"pool_feed": feed, "repeat_samples_ms": repeated.device_ms if repeated else None}
        output = s.runner.output()  # a runner whose output can't be read has not really run
        copies = {"copy_in_ms": None, "copy_out_ms": None, **(_copy_times(h, output) if on_gpu and first else {})}
        after = s.after()  # after the copies: their buffers count in the trial's memory, as they always have
        joules = _energy(h, meter, window, len(samples.device_ms), s.runner.step, timer.synchronize, last)
        profiled: Row = {}
        if profile is not None:
            profile.finish()
            profiled = _profile(s.runner, ctx.trial)
        second = stale.probe(s.runner) if last else None  # last: a second input through the timed buffers
    return Repeat(samples=samples, setup_s=s.setup_s, gpu=gpu, timing_cpu=cpu, output=output, after=after,
                  copies=copies, profile=profiled, pool=pooled, energy=joules, stale=second)


def _pool_columns(h: Harness, first: Row, samples: list[float]) -> Row:
    """The pool's columns (``workers.measure.pool``): its size, how it was fed, the repeat check's."""
    cols: Row = {"input_pool": h.trial.measure.input_pool, "pool_feed": first.get("pool_feed")}
    repeated = first.get("repeat_samples_ms")
    if repeated:
        cols.update(pool.repeat_columns(samples, repeated))
    return cols


def _energy(h: Harness, meter: Any, window: Any, iters: int, step: Any, sync: Any, last: bool) -> Row:
    joules: Row = dict.fromkeys(energy.COLUMNS)
    if meter and window:  # more iterations, untimed, where the timed loop was too short for the counter
        try:
            joules = energy.columns(meter, window, iters, h.ctx.batch_size, step, sync)
        except Exception as exc:  # NVML misbehaving is no reason to lose the latency
            joules["energy_note"] = f"energy not measured: {type(exc).__name__}: {exc}"[:1000]
    elif last:
        joules["energy_note"] = "not a GPU trial"
    return joules


def _profile(runner: Any, trial: Trial) -> Row:
    """Profile PROFILE_ITERS more steps of a timed runner: the row's profile columns, and the trace
    under FILES_KEY for the driver to write. A profile that can't be made is the row's
    ``profile_error``, not the trial's failure: the measurement itself is unaffected."""
    cols: Row = {"profile_iters": None, "profile_file": None, "profile_bytes": None,
                     "profile_s": None, "profile_error": None}
    if runner.profiler is None:
        return {**cols, "profile_error": f"backend {runner.name} has no profiler"}
    t0 = time.perf_counter()
    try:
        trace = runner.profile(PROFILE_ITERS)
    except Exception as exc:
        return {**cols, "profile_error": f"profiling failed: {type(exc).__name__}: {exc}"[:1000]}
    cols.update(profile_iters=PROFILE_ITERS, profile_bytes=len(trace), profile_s=time.perf_counter() - t0)
    if len(trace) > PROFILE_MAX_BYTES:
        return {**cols, "profile_error": f"the trace is {len(trace) / 2**20:.1f} MiB, over the "
                                         f"{PROFILE_MAX_BYTES / 2**20:g} MiB a row may carry: not kept"}
    path = profile_path(trial)
    return {**cols, "profile_file": path, FILES_KEY: {path: trace}}


def _copy_times(h: Harness, output: Any) -> Row:
    """For ``io: host`` on runners that do the copies themselves (``Runner.times_copies``): the
    host->device copy of the input and device->host copy of the output, timed alone."""
    ctx, runner_cls = h.ctx, h.runner_cls
    if ctx.io != "host" or not runner_cls.times_copies(runner_cls.Options.model_validate(ctx.trial.options)):
        return {}
    if ctx.model.inputs or not isinstance(output, np.ndarray):
        return {}  # several inputs or outputs: several copies, not one to time alone (null columns)
    import torch

    from workers.models.build import torch_dtype

    y = torch.empty(output.shape, dtype=torch_dtype(ctx.dtype), device="cuda")
    return measure_copies(ctx.input(device="cpu"), y, "cuda")


def _finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None
