"""Run one trial on this process's device and turn it into a row. Never raises for the trial's
own failures: an exception inside the trial is the row's ``error``."""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from typing import Any

import numpy as np

from workers import envinfo
from workers.backends import SkipTrial, get
from workers.context import TrialContext
from workers.faults import oom_message
from workers.models import ModelStore
from workers.stats import latency_stats
from workers.timing import CudaTimer, HostTimer, measure

TRACEBACK_TAIL = 4000


def base_row(trial: dict[str, Any]) -> dict[str, Any]:
    """The columns that come from the spec alone."""
    model = trial["model"]
    return {
        "trial_id": trial["trial_id"],
        "plan": trial["plan"],
        "model": model["name"],
        "model_source": f"{model['kind']}:{model['ref']}",
        "input_shape": list(model["input_shape"]),
        "backend": trial["backend"],
        "label": trial["label"],
        "options": json.dumps(trial["options"], sort_keys=True),
        "batch_size": trial["batch_size"],
        "dtype": trial["dtype"],
        "io": trial["io"],
    }


def run_trial(
    trial: dict[str, Any], device: str, store: ModelStore, cpus: float = 1.0, cuda_ok: bool = True
) -> dict[str, Any]:
    """Measure ``trial`` on ``device`` ("cuda"/"cpu") and return its row.

    ``cuda_ok`` is False in a worker that Ray gave a GPU which CUDA can't see (logical GPUs in
    tests): model-less backends still run there; the others fail with that reason.
    """
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    row = base_row(trial)
    row.update(device=device, started_at=started, **envinfo.versions(),
               **envinfo.device_facts(device if cuda_ok else "cpu"))
    try:
        row.update(_measure(trial, device, store, cpus, cuda_ok))
        row["status"] = "ok"
    except SkipTrial as exc:
        row.update(status="skipped", error=str(exc))
    except ParityFailure as exc:
        row.update(status="parity_failed", error=str(exc))
    except Exception as exc:  # the trial's failure is data, not a crash of the run
        oom = oom_message(exc)
        row.update(status="oom" if oom else "failed", error=oom or f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc()[-TRACEBACK_TAIL:])
    row["duration_s"] = time.perf_counter() - t0
    return row


def _measure(trial: dict[str, Any], device: str, store: ModelStore, cpus: float, cuda_ok: bool) -> dict[str, Any]:
    runner_cls = get(trial["backend"])
    reason = runner_cls.skip_reason(trial, device)
    if reason:
        raise SkipTrial(reason)
    if not cuda_ok and not runner_cls.modelless:
        import os

        raise RuntimeError(
            "this worker was given a GPU but CUDA can't see it "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    ctx = TrialContext(trial=trial, device=device, store=store, cpus=cpus)
    runner = runner_cls(ctx, runner_cls.Options.model_validate(trial["options"]))
    m = trial["measure"]
    mem = _MemoryWatch(device if cuda_ok else "cpu")
    t_setup = time.perf_counter()
    try:
        runner.setup()
        setup_s = time.perf_counter() - t_setup
        timer = CudaTimer() if device == "cuda" and cuda_ok else HostTimer()
        samples = measure(
            runner.step, timer,
            warmup_iters=m["warmup_iters"], iters=m["iters"],
            min_time_s=m["min_time_s"], max_time_s=m["max_time_s"],
        )
        output = runner.output()  # a runner whose output can't be read has not really run
        extra = runner.extra_columns()
        peak = mem.peak()  # before teardown: ORT's arena is freed with its session
    finally:
        runner.teardown()
    out = {
        "warmup_iters": samples.warmup_iters,
        "iters": len(samples.device_ms),
        "samples_ms": samples.device_ms,
        "host_samples_ms": samples.host_ms,
        "host_ms_median": latency_stats(samples.host_ms, 1)["latency_ms_median"],
        "hit_max_time": samples.hit_max_time,
        "setup_s": setup_s,
        "gpu_mem_peak_bytes": peak,
        **latency_stats(samples.device_ms, ctx.batch_size),
        **ctx.facts,
        **extra,
    }
    del runner
    mem.release()
    bad = int(output.size - np.isfinite(output).sum())
    if bad:
        raise ParityFailure(f"output has {bad} NaN/Inf values of {output.size}; latency not published")
    return out


class ParityFailure(Exception):
    """The trial ran but its output is wrong (NaN/Inf, or off the reference): no latency published."""


class _MemoryWatch:
    """Peak GPU memory of one trial, for torch's allocator and for ORT's own arena alike."""

    def __init__(self, device: str) -> None:
        self.device = device
        if device == "cuda":
            import torch

            self._torch = torch
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            free, total = torch.cuda.mem_get_info()
            self._used0 = total - free

    def peak(self) -> int | None:
        if self.device != "cuda":
            return None
        torch = self._torch
        free, total = torch.cuda.mem_get_info()
        grown = (total - free) - self._used0
        return int(max(torch.cuda.max_memory_allocated(), grown, 0))

    def release(self) -> None:
        if self.device == "cuda":
            import gc

            gc.collect()
            self._torch.cuda.empty_cache()
