"""Memory of one trial, each number measured on its own (docs/measuring.md#memory says what each means).

- torch's caching allocator: peak allocated and peak reserved bytes, its peak statistics reset as
  the trial's repeat starts (``torch.cuda.reset_peak_memory_stats``); CUDA trials only.
- the worker process's own GPU memory, from NVML (``nvmlDeviceGetComputeRunningProcesses``, the
  entry whose pid is ``os.getpid()``): what the CUDA context, ORT's arena and cuDNN's workspaces
  really take. Where NVML can't match the process (a container with its own PID namespace sees
  host PIDs) or doesn't report the figure, it is null and ``gpu_mem_process_note`` says why.
- the device's used memory (``cudaMemGetInfo``: every process's) before setup and after timing.
- the worker's host RSS peak for this trial alone. Linux keeps a high-water mark per process
  (``VmHWM``); writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS, so the
  mark read after the trial is the trial's own peak. Where that write is refused, a thread reads
  ``/proc/self/statm`` every ``SAMPLE_S`` seconds during the trial instead (a peak shorter than
  that can be missed); ``host_rss_peak_method`` says which. Null off Linux.

Unknown is null, never zero.
"""

from __future__ import annotations

import os
import threading

from workers.measure import nvml
from workers.row import Row

SAMPLE_S = 0.01
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: The columns this module fills (every row of a measured trial has them, null where unknown).
COLUMNS = ("torch_mem_peak_allocated_bytes", "torch_mem_peak_reserved_bytes", "gpu_mem_process_bytes",
           "gpu_mem_process_note", "gpu_mem_used_before_bytes", "gpu_mem_used_after_bytes",
           "host_rss_peak_bytes", "host_rss_peak_method")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _reset_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


class HostPeak:
    """The process's RSS high-water mark from now until ``finish``: reset through clear_refs, or sampled."""

    def __init__(self) -> None:
        self.method: str | None = None
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: Row | None = None
        if _rss() is None:
            return  # no /proc: not Linux
        if _reset_high_water_mark():
            self.method = "clear_refs"
            return
        self.method = f"sampled every {SAMPLE_S * 1e3:g} ms"
        self._peak = _rss() or 0
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._peak = max(self._peak, _rss() or 0)

    def finish(self) -> Row:
        """The peak since this watch began; the first call ends the window (later calls repeat its answer)."""
        if self._result is not None:
            return self._result
        if self.method is None:
            peak = None
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss() or 0)
        else:
            peak = _status_kib("VmHWM")
        self._result = {"host_rss_peak_bytes": peak, "host_rss_peak_method": self.method}
        return self._result


def process_gpu_memory(uuid: str | None) -> tuple[int | None, str | None]:
    """(bytes, None) of this process's memory on GPU ``uuid`` as NVML counts it, or (None, why not)."""
    nv = nvml.load()
    if nv is None:
        return None, "NVML unavailable (nvidia-ml-py missing or no driver)"
    h = nvml.handle(uuid)
    if h is None:
        return None, f"NVML has no handle for GPU {uuid}"
    try:
        procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
    except Exception as exc:
        return None, f"nvmlDeviceGetComputeRunningProcesses failed: {exc}"
    me = os.getpid()
    mine = [p for p in procs if int(p.pid) == me]
    if not mine:
        pids = sorted(int(p.pid) for p in procs)
        return None, (f"NVML lists no process with this worker's pid {me} (it lists {pids}): another PID "
                      "namespace, as in some containers")
    used = getattr(mine[0], "usedGpuMemory", None)
    if used is None or used < 0 or used >= 2**63 - 1 or used == 0xFFFFFFFFFFFFFFFF:
        return None, "NVML does not report this process's memory here (NVML_VALUE_NOT_AVAILABLE)"
    return int(used), None


class TrialMemory:
    """Memory of one repeat of a trial: made before setup, ``columns`` read after timing, before teardown.

    Also keeps ``gpu_mem_peak_bytes`` as it has always been: the larger of torch's allocator peak and
    the device's used-memory growth.
    """

    def __init__(self, device: str, gpu_uuid: str | None) -> None:
        self.device, self.uuid = device, gpu_uuid
        if device == "cuda":
            import torch

            self._torch = torch
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            free, total = torch.cuda.mem_get_info()
            self._used0 = total - free

    def columns(self) -> Row:
        """The GPU columns (null on a CPU trial) and ``peak``, the legacy ``gpu_mem_peak_bytes``."""
        if self.device != "cuda":
            return {k: None for k in COLUMNS if not k.startswith("host_")} | {"peak": None}
        torch = self._torch
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        used = total - free
        allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        proc, note = process_gpu_memory(self.uuid)
        return {"torch_mem_peak_allocated_bytes": int(allocated), "torch_mem_peak_reserved_bytes": int(reserved),
                "gpu_mem_process_bytes": proc, "gpu_mem_process_note": note,
                "gpu_mem_used_before_bytes": int(self._used0), "gpu_mem_used_after_bytes": int(used),
                "peak": int(max(allocated, used - self._used0, 0))}

    def release(self) -> None:
        if self.device == "cuda":
            import gc

            gc.collect()
            self._torch.cuda.empty_cache()


def merge(repeats: list[Row]) -> Row:
    """One trial's GPU memory columns from its repeats' (each a fresh runner): peaks are the largest,
    the device's used memory before is the first repeat's and after is the last's."""
    first, last = repeats[0], repeats[-1]
    out = {"gpu_mem_used_before_bytes": first["gpu_mem_used_before_bytes"],
           "gpu_mem_used_after_bytes": last["gpu_mem_used_after_bytes"],
           "gpu_mem_process_note": next((r["gpu_mem_process_note"] for r in repeats if r["gpu_mem_process_note"]),
                                        None)}
    for k in ("torch_mem_peak_allocated_bytes", "torch_mem_peak_reserved_bytes", "gpu_mem_process_bytes"):
        vals = [r[k] for r in repeats if r[k] is not None]
        out[k] = max(vals) if vals else None
    return out
