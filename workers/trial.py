"""Run one trial on this process's device and turn it into a row. Never raises for the trial's
own failures: an exception inside the trial is the row's ``error``, and a row is checked against
the result schema here, on the worker (``workers.rows.checked_row``)."""

from __future__ import annotations

import datetime as dt
import functools
import sys
import time
import traceback

from workers import scenarios
from workers.backends import Runner, SkipTrial, get
from workers.context import TrialContext
from workers.contract import ARMS_KEY, FILES_KEY, Status, Trial
from workers.faults import oom_message
from workers.measure import envinfo, memory, parity, stale, validity
from workers.measure.parity import ParityFailure
from workers.measure.timing import settle_launch_state
from workers.models.build import ModelStore
from workers.row import Row
from workers.rows import checked_row, spec_columns
from workers.scenarios._session import Harness
from workers.scenarios.base import Measured

TRACEBACK_TAIL = 4000


def versions() -> Row:
    """The version columns of a row, without importing torch or ORT into a process that hasn't.

    A light worker (model-less trials only) reads the versions from the packages' metadata;
    CUDA's, cuDNN's and the driver's are then null. Once torch is imported, torch's own answer.
    """
    if "torch" in sys.modules:
        return envinfo.versions()
    return _light_versions()


@functools.cache
def _light_versions() -> Row:
    import platform

    build = envinfo.torch_build()  # torch/version.py read as text: no import
    return {"torch_version": build["__version__"] or envinfo.dist_version("torch"),
            "ort_version": envinfo.dist_version("onnxruntime", "onnxruntime-gpu"),
            "onnx_version": envinfo.dist_version("onnx"), "ray_version": envinfo.dist_version("ray"),
            "python_version": platform.python_version(), "cuda_version": build["cuda"],
            "cudnn_version": None, "driver_version": None, "cpu_model": envinfo.cpu_model()}


def run_trial(trial: Trial, device: str, store: ModelStore, cpus: float = 1.0, cuda_ok: bool = True,
              spec: Row | None = None, worker: Row | None = None, arm_specs: list[Row] | None = None) -> Row:
    """Measure ``trial`` on ``device`` ("cuda"/"cpu") and return its row: ``spec`` (the driver's
    trial's columns; default: ``trial``'s), ``worker``'s columns, and what was measured.

    An interleaved unit (a trial with ``arms``) gives one row per trial: its own, carrying the
    arms' rows (their ``spec`` in ``arm_specs``) under ``ARMS_KEY`` for the driver to store.

    ``cuda_ok`` is False in a worker that Ray gave a GPU which CUDA can't see (logical GPUs in
    tests): model-less backends still run there; the others fail with that reason.
    """
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    members = (trial, *trial.arms)
    specs = [spec or spec_columns(trial), *(arm_specs or [spec_columns(a) for a in trial.arms])]
    facts = {"device": device, "started_at": started, **versions(),
             **envinfo.device_facts(device if cuda_ok else "cpu")}
    rows: list[Row] = [{**s, **(worker or {}), **facts} for s in specs]
    try:
        results = _measure(trial, device, store, cpus, cuda_ok)
    except Exception as exc:  # the trial's failure is data, not a crash of the run
        results = [exc] * len(members)
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, Exception):
            _ended(row, result)
        else:
            row.update(result)
            row["status"] = Status.OK
    out = [_finished(row, t, time.perf_counter() - t0) for row, t in zip(rows, members, strict=True)]
    if trial.arms:
        out[0][ARMS_KEY] = out[1:]
    return out[0]


def _ended(row: Row, exc: Exception) -> None:
    """``row`` of a trial that raised ``exc``: skipped, parity_failed, oom or failed, with why."""
    if isinstance(exc, SkipTrial):
        row.update(status=Status.SKIPPED, error=str(exc))
    elif isinstance(exc, ParityFailure):
        row.update(exc.columns)
        row.update(status=Status.PARITY_FAILED, error=str(exc))
    else:
        row.update(getattr(exc, "columns", None) or {})  # InvalidMeasurement: the facts behind it
        oom = oom_message(exc)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        row.update(status=Status.OOM if oom else Status.FAILED, error=oom or f"{type(exc).__name__}: {exc}",
                   traceback=tb[-TRACEBACK_TAIL:])


def _finished(row: Row, trial: Trial, duration_s: float) -> Row:
    """The row as stored: its duration, its status as text, its validity, checked against the schema."""
    row["duration_s"] = duration_s
    row["status"] = str(row["status"])
    row.update(validity.verdict(row, trial))
    files = row.pop(FILES_KEY, None)  # not a column: files for the run directory, written by the driver
    row = checked_row(row)
    if files and row["status"] == Status.OK:
        row[FILES_KEY] = files
    return row


def _measure(trial: Trial, device: str, store: ModelStore, cpus: float, cuda_ok: bool) -> list[Row | Exception]:
    """The measured columns of ``trial`` and of each of its ``arms``, or the exception that ended one."""
    runner_cls = get(trial.backend)
    scenario = scenarios.get(trial.scenario)
    # generation, one at a time or under load: its own runners, checks and parity (workers.generation)
    own = scenario.own_runners or trial.new_tokens > 0
    reason = None if own else runner_cls.skip_reason(trial, device) or runner_cls.scenario_skip_reason(trial, device)
    for arm in trial.arms:  # an interleaved unit is measured whole, or not at all
        arm_cls = get(arm.backend)
        why = arm_cls.skip_reason(arm, device) or arm_cls.scenario_skip_reason(arm, device)
        reason = reason or (f"arm {arm.arm or arm.label} of this interleaved unit: {why}" if why else None)
    if reason:
        raise SkipTrial(reason)
    unmet = scenarios.one_at_a_time(trial)
    if unmet:
        raise SkipTrial(next(iter(unmet.values())))
    if trial.slowdown and (scenario.uses_lanes or own) and not runner_cls.slows_itself:
        raise SkipTrial(f"slowdown is injected into the runner's step, one request at a time; the "
                        f"{trial.scenario} scenario does not time that step alone")
    if not cuda_ok and not all(get(t.backend).modelless for t in (trial, *trial.arms)):
        import os

        raise RuntimeError(
            "this worker was given a GPU but CUDA can't see it "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    on_gpu = device == "cuda" and cuda_ok
    if on_gpu:
        settle_launch_state()  # a worker's first trial in the state of its later ones
    ctx = TrialContext(trial=trial, device=device, store=store, cpus=cpus)
    measured = scenario.measure(Harness(runner_cls, ctx, on_gpu))
    if own:
        return [measured.columns]
    results: list[Row | Exception] = []
    for t, m in zip((trial, *trial.arms), (measured, *measured.arms), strict=True):
        try:
            results.append(_checked(t, device, store, cuda_ok, get(t.backend), m))
        except ParityFailure as exc:  # this arm's output is wrong; the others' rows stand
            results.append(exc)
    return results


def _checked(trial: Trial, device: str, store: ModelStore, cuda_ok: bool, runner_cls: type[Runner],
             measured: Measured) -> Row:
    """The measured columns with the parity columns of its outputs (every repeat's, or every lane's)
    and the stale-output check of its probe (None where not probed); raises ParityFailure, keeping
    what ran, when one is wrong."""
    out, outputs, second = measured.columns, measured.outputs, measured.second
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


#: Row a parity_failed row keeps: what ran, not how fast (and the backend's own, named on its class).
_KEPT_ON_PARITY_FAILURE = frozenset({"warmup_iters", "iters", "repeats", "setup_s", "warmup_s", "timed_s",
                                     "gpu_mem_peak_bytes", "contended", "contention_checks", "math_effective",
                                     "input_pool", "pool_feed",
                                     *memory.COLUMNS})
