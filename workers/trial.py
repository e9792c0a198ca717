"""Run one trial on this process's device and turn it into a row. Never raises for the trial's
own failures: an exception inside the trial is the row's ``error``, and a row is checked against
the result schema here, on the worker (``workers.contract.checked_row``)."""

from __future__ import annotations

import datetime as dt
import functools
import sys
import time
import traceback
from typing import Any

import numpy as np

from workers import affinity, energy, envinfo, memory, parity, scenarios, stale, stats, validity
from workers.backends import SkipTrial, get
from workers.context import TrialContext
from workers.contract import (
    FILES_KEY,
    PROFILE_ITERS,
    PROFILE_MAX_BYTES,
    Status,
    Trial,
    checked_row,
    profile_path,
    spec_columns,
)
from workers.faults import oom_message
from workers.models import ModelStore
from workers.parity import ParityFailure
from workers.timing import CudaTimer, HostTimer, measure, measure_copies, settle_launch_state

TRACEBACK_TAIL = 4000


def versions() -> dict[str, Any]:
    """The version columns of a row, without importing torch or ORT into a process that hasn't.

    A light worker (model-less trials only) reads the versions from the packages' metadata;
    CUDA's, cuDNN's and the driver's are then null. Once torch is imported, torch's own answer.
    """
    if "torch" in sys.modules:
        return envinfo.versions()
    return _light_versions()


@functools.cache
def _light_versions() -> dict[str, Any]:
    import platform

    build = envinfo.torch_build()  # torch/version.py read as text: no import
    return {"torch_version": build["__version__"] or envinfo.dist_version("torch"),
            "ort_version": envinfo.dist_version("onnxruntime", "onnxruntime-gpu"),
            "onnx_version": envinfo.dist_version("onnx"), "ray_version": envinfo.dist_version("ray"),
            "python_version": platform.python_version(), "cuda_version": build["cuda"],
            "cudnn_version": None, "driver_version": None, "cpu_model": envinfo.cpu_model()}


def run_trial(
    trial: Trial, device: str, store: ModelStore, cpus: float = 1.0, cuda_ok: bool = True
) -> dict[str, Any]:
    """Measure ``trial`` on ``device`` ("cuda"/"cpu") and return its row.

    ``cuda_ok`` is False in a worker that Ray gave a GPU which CUDA can't see (logical GPUs in
    tests): model-less backends still run there; the others fail with that reason.
    """
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    row = spec_columns(trial)
    row.update(device=device, started_at=started, **versions(),
               **envinfo.device_facts(device if cuda_ok else "cpu"))
    try:
        row.update(_measure(trial, device, store, cpus, cuda_ok))
        row["status"] = Status.OK
    except SkipTrial as exc:
        row.update(status=Status.SKIPPED, error=str(exc))
    except ParityFailure as exc:
        row.update(exc.columns)
        row.update(status=Status.PARITY_FAILED, error=str(exc))
    except Exception as exc:  # the trial's failure is data, not a crash of the run
        row.update(getattr(exc, "columns", None) or {})  # InvalidMeasurement: the facts behind it
        oom = oom_message(exc)
        row.update(status=Status.OOM if oom else Status.FAILED, error=oom or f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc()[-TRACEBACK_TAIL:])
    row["duration_s"] = time.perf_counter() - t0
    row["status"] = str(row["status"])
    row.update(validity.verdict(row, trial))
    files = row.pop(FILES_KEY, None)  # not a column: files for the run directory, written by the driver
    row = checked_row(row)
    if files and row["status"] == Status.OK:
        row[FILES_KEY] = files
    return row


def _measure(trial: Trial, device: str, store: ModelStore, cpus: float, cuda_ok: bool) -> dict[str, Any]:
    runner_cls = get(trial.backend)
    reason = runner_cls.skip_reason(trial, device) or runner_cls.scenario_skip_reason(trial, device)
    if reason:
        raise SkipTrial(reason)
    if not cuda_ok and not runner_cls.modelless:
        import os

        raise RuntimeError(
            "this worker was given a GPU but CUDA can't see it "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    on_gpu = device == "cuda" and cuda_ok
    if on_gpu:
        settle_launch_state()  # a worker's first trial in the state of its later ones
    ctx = TrialContext(trial=trial, device=device, store=store, cpus=cpus)
    if trial.scenario != "single-stream":  # several requests in flight: workers/scenarios.py
        out, outputs = scenarios.measure(runner_cls, ctx, on_gpu)
        return _checked(trial, device, store, cuda_ok, runner_cls, out, outputs, None)
    host_mem = memory.HostPeak()  # this trial's own RSS peak: setup and timing of every repeat
    n = trial.measure.repeats
    try:  # the last repeat is profiled when asked, after its timing
        repeats = [_measure_once(runner_cls, ctx, on_gpu, first=i == 0, last=i == n - 1,
                                 profile=host_mem if trial.profile and i == n - 1 else None) for i in range(n)]
    finally:
        host_peak = host_mem.finish()  # before parity, whose reference model is not the trial's
    first = repeats[0]
    dev = [x for r in repeats for x in r["samples"].device_ms]
    host = [x for r in repeats for x in r["samples"].host_ms]
    medians = [stats.median(r["samples"].device_ms) for r in repeats]
    lat = stats.latency_stats(dev, ctx.batch_size, seed=ctx.seed)
    host_median = stats.median(host)
    out = {
        "warmup_iters": sum(r["samples"].warmup_iters for r in repeats),
        "iters": len(dev),
        "samples_ms": dev,
        "host_samples_ms": host,
        "host_ms_median": host_median,
        "launch_overhead_ms": host_median - lat["latency_ms_median"],
        "hit_max_time": any(r["samples"].hit_max_time for r in repeats),
        "converged": all(r["samples"].converged for r in repeats),
        "repeats": len(repeats),
        "repeat_medians_ms": medians,
        "repeat_cv": stats.between_run_cv(medians),
        "repeat_rel_ci": [_finite_or_none(stats.relative_ci(r["samples"].device_ms)) for r in repeats],
        "setup_s": first["setup_s"],
        "warmup_s": sum(r["samples"].warmup_s for r in repeats),
        "timed_s": sum(r["samples"].timed_s for r in repeats),
        "gpu_mem_peak_bytes": max((r["peak"] for r in repeats if r["peak"] is not None), default=None),
        **memory.merge([r["memory"] for r in repeats]),
        **host_peak,
        **first["copies"],
        **envinfo.merge_watches([r["gpu"] for r in repeats]), "timing_cpu": repeats[-1]["timing_cpu"],
        **lat,
        **ctx.facts,
        **first["extra"],
        **repeats[-1]["profile"],
        **repeats[-1]["energy"],
    }
    outputs = [r["output"] for r in repeats]
    second = repeats[-1]["stale"]
    del repeats
    return _checked(trial, device, store, cuda_ok, runner_cls, out, outputs, second)


def _checked(trial: Trial, device: str, store: ModelStore, cuda_ok: bool, runner_cls: Any, out: dict[str, Any],
             outputs: list[Any], second: dict[str, Any] | None) -> dict[str, Any]:
    """``out`` with the parity columns of ``outputs`` (every repeat's, or every lane's) and the
    stale-output check of ``second`` (``workers.stale.probe``'s, None where not probed); raises
    ParityFailure, keeping what ran, when one is wrong."""
    t_parity = time.perf_counter()
    try:
        on = device if cuda_ok else "cpu"
        out.update(parity.check(trial, on, store, outputs, runner_cls.modelless))
        out.update(stale.check(trial, on, store, second, outputs[-1], runner_cls.modelless))
        out["parity_s"] = time.perf_counter() - t_parity
    except parity.ParityFailure as exc:
        kept = _KEPT_ON_PARITY_FAILURE | runner_cls.kept_on_parity_failure
        # parity_*: of the timed input, when it is the stale-output check that failed
        keep = {k: v for k, v in out.items() if k in kept or k.startswith(("gpu_", "parity_"))}
        raise ParityFailure(str(exc), {**keep, **exc.columns}) from None
    return out


def _finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None


#: Columns a parity_failed row keeps: what ran, not how fast (and the backend's own, named on its class).
_KEPT_ON_PARITY_FAILURE = frozenset({"warmup_iters", "iters", "repeats", "setup_s", "warmup_s", "timed_s",
                                     "gpu_mem_peak_bytes", "contended", "contention_checks",
                                     *memory.COLUMNS})


def _measure_once(runner_cls: Any, ctx: TrialContext, on_gpu: bool, first: bool, last: bool = True,
                  profile: memory.HostPeak | None = None) -> dict[str, Any]:
    """One repeat: a fresh runner, set up, timed, its output read, torn down. The last repeat also
    gives the energy columns (on a GPU). ``profile``: profile it after all that, the trial's host
    memory window (``profile``) closed first, so nothing measured includes the profiler."""
    runner = runner_cls(ctx, runner_cls.Options.model_validate(ctx.trial.options))
    gpu_uuid = envinfo.device_facts("cuda")["gpu_uuid"] if on_gpu else None
    mem = memory.TrialMemory("cuda" if on_gpu else "cpu", gpu_uuid)
    t_setup = time.perf_counter()
    watch = None
    try:
        runner.setup()
        setup_s = time.perf_counter() - t_setup
        timer = CudaTimer() if on_gpu else HostTimer()
        watch = envinfo.GpuWatch(gpu_uuid) if on_gpu else None
        meter = energy.NvmlMeter(gpu_uuid) if on_gpu and last else None
        window = energy.TimedWindow(meter) if meter else None
        timed = [f for f in (window, watch) if f is not None]  # the energy counter's window, the sampler's
        cpu = affinity.timing_cpu(gpu_uuid) if on_gpu else None
        with affinity.pinned(cpu):  # warm-up and timed loop on one CPU near the GPU (workers/affinity.py)
            samples = measure(runner.step, timer, ctx.trial.measure,
                              on_timed=(lambda starting: [f(starting) for f in timed]) if timed else None)
        gpu = watch.finish() if watch else dict.fromkeys(envinfo.GPU_COLUMNS)
        output = runner.output()  # a runner whose output can't be read has not really run
        extra = runner.extra_columns()
        copies = _copy_times(runner_cls, ctx, output) if on_gpu and first else {}
        copies = {"copy_in_ms": None, "copy_out_ms": None, **copies}
        mem_cols = mem.columns()  # before teardown: ORT's arena is freed with its session
        peak = mem_cols.pop("peak")
        joules: dict[str, Any] = dict.fromkeys(energy.COLUMNS)
        if meter and window:  # more iterations, untimed, where the timed loop was too short for the counter
            try:
                joules = energy.columns(meter, window, len(samples.device_ms), ctx.batch_size, runner.step,
                                        timer.synchronize)
            except Exception as exc:  # NVML misbehaving is no reason to lose the latency
                joules["energy_note"] = f"energy not measured: {type(exc).__name__}: {exc}"[:1000]
        elif last:
            joules["energy_note"] = "not a GPU trial"
        profiled = {}
        if profile is not None:
            profile.finish()
            profiled = _profile(runner, ctx.trial)
        second = stale.probe(runner) if last else None  # last: a second input through the timed buffers
    finally:
        if watch is not None:
            watch.close()  # its sampler thread, where timing raised before it could stop it
        runner.teardown()
    del runner
    mem.release()
    return {"samples": samples, "setup_s": setup_s, "gpu": gpu, "timing_cpu": cpu, "output": output, "extra": extra,
            "copies": copies, "peak": peak, "memory": mem_cols, "profile": profiled,
            "energy": joules, "stale": second}


def _profile(runner: Any, trial: Trial) -> dict[str, Any]:
    """Profile PROFILE_ITERS more steps of a timed runner: the row's profile columns, and the trace
    under FILES_KEY for the driver to write. A profile that can't be made is the row's
    ``profile_error``, not the trial's failure: the measurement itself is unaffected."""
    cols: dict[str, Any] = {"profile_iters": None, "profile_file": None, "profile_bytes": None,
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


def _copy_times(runner_cls: Any, ctx: TrialContext, output: np.ndarray) -> dict[str, Any]:
    """For ``io: host`` on runners that do the copies themselves (``Runner.times_copies``): the
    host->device copy of the input and device->host copy of the output, timed alone."""
    if ctx.io != "host" or not runner_cls.times_copies(runner_cls.Options.model_validate(ctx.trial.options)):
        return {}
    if ctx.model.inputs or not isinstance(output, np.ndarray):
        return {}  # several inputs or outputs: several copies, not one to time alone (null columns)
    import torch

    from workers.models import torch_dtype

    y = torch.empty(output.shape, dtype=torch_dtype(ctx.dtype), device="cuda")
    return measure_copies(ctx.input(device="cpu"), y, "cuda")
