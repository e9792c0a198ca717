"""A trial measured in several fresh processes (``measure.process_repeats: N``), one after another.

The worker that was given the trial starts each process itself and waits for it, so all N run on
its GPU (they inherit its environment, CUDA_VISIBLE_DEVICES included) with no other trial between
them, and the trial stays one call for the scheduler: its timeout (``timeout_s`` times N), retries
and failure rows are those of any trial::

    for k in 1..N:
        start `python -m workers.trial_process PAYLOAD ROW`   # the trial, its columns, the worker's settings
            the process: a fresh worker (nothing imported, built or warmed before), runs the trial as a
            worker runs one (``workers.trial.run_trial``), writes its row to ROW, exits; it exits too
            if the worker that started it goes (a timeout's kill), within WATCH_S
        its row not ok (failed, oom, skipped, ...), or no row (it crashed): the trial's row is that,
            the error naming the process (k of N, its pid); the processes after it don't run
    the row: the N rows merged (``workers.measure.processes.merge``): every sample, the pids, each
        process's median, their spread, an interval of the median that includes it; a profile (where
        the trial asks for one) is the last process's, the others don't make one

A process that crashes costs the trial, not the worker: it is the trial's ``failed`` row, and the
worker takes the next trial (``retries``, which run a trial again after its worker died, don't apply).

The worker may hold a CUDA context of its own while a process runs (it imported torch for an
earlier trial): it runs nothing there meanwhile, so the process's contention check does not count
it (``PARENT_GPU_PID_ENV``; ``workers.measure.envinfo.other_gpu_processes``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from workers.contract import Status, Trial
from workers.measure import processes
from workers.measure.envinfo import PARENT_GPU_PID_ENV
from workers.row import Row
from workers.rows import failure_row

#: How often a process checks that the worker that started it is still there, s.
WATCH_S = 0.5
#: The end of a process's stderr kept in the error of a process that ended without a row.
STDERR_TAIL = 2000


@dataclass(frozen=True)
class Starter:
    """What a process takes from the worker that starts it: the worker's name, device, CPUs and seed."""

    name: str
    device: str
    cpus: float
    seed: int


def run(worker: Starter, trial: Trial, spec: Row, cuda_ok: bool) -> Row:
    """``trial`` measured in ``trial.measure.process_repeats`` fresh processes: the merged row, or the
    row of the first process that did not end ``ok`` (see the module's doc)."""
    n = trial.measure.process_repeats
    t0 = time.perf_counter()
    rows: list[Row] = []
    pids: list[int] = []
    with tempfile.TemporaryDirectory(prefix="infer-orch-processes-") as tmp:
        for k in range(1, n + 1):
            payload = Path(tmp) / f"payload-{k}.pkl"
            mine = trial if k == n else replace(trial, profile=False)  # the row keeps the last process's profile
            payload.write_bytes(pickle.dumps({"name": worker.name, "device": worker.device, "cpus": worker.cpus,
                                              "seed": worker.seed, "trial": mine, "spec": spec,
                                              "cuda_ok": cuda_ok, "parent": os.getpid()}))
            row, pid = _one(Path(tmp), payload, k, trial, spec, worker)
            pids.append(pid)
            if row["status"] != Status.OK:
                return _ended(row, k, n, pid, pids, t0)
            rows.append(row)
    merged = processes.merge(rows, pids, trial)
    merged["duration_s"] = time.perf_counter() - t0
    return merged


def _one(tmp: Path, payload: Path, k: int, trial: Trial, spec: Row, worker: Starter) -> tuple[Row, int]:
    """Process ``k``: its row (one built here if it wrote none) and its pid."""
    out, err = tmp / f"row-{k}.pkl", tmp / f"stderr-{k}.txt"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "workers.trial_process", str(payload), str(out)],
                                env=_environment(), stdin=subprocess.DEVNULL, stderr=stderr)
        code = proc.wait()
    text = err.read_text(errors="replace")
    if text:
        sys.stderr.write(text)  # the worker's log keeps what the process said
    if code == 0 and out.exists():
        return pickle.loads(out.read_bytes()), proc.pid
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = text.strip()[-STDERR_TAIL:]
    row = failure_row(trial, Status.FAILED, f"it {how} without a row (a crash, the OOM killer, a kill)"
                      + (f"; its stderr ends: {tail}" if tail else ""), **spec)
    row.update(worker=worker.name, device=worker.device, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return row, proc.pid


def _ended(row: Row, k: int, n: int, pid: int, pids: list[int], t0: float) -> Row:
    """The trial's row when process ``k`` did not end ok: its own, saying which process it was."""
    if row["status"] != Status.SKIPPED:
        row["error"] = f"process {k} of {n} (pid {pid}): {row.get('error') or row['status']}"
    row.update(process_repeats=n, process_pids=list(pids), duration_s=time.perf_counter() - t0)
    return row


def _environment() -> dict[str, str]:
    """The worker's environment, with its import path (so the process imports the same code, a plan's
    ``python:`` factories included) and, where the worker holds a CUDA context, its pid."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        env[PARENT_GPU_PID_ENV] = str(os.getpid())
    else:
        env.pop(PARENT_GPU_PID_ENV, None)
    return env

