"""Facts about the worker's environment: per run (versions, host, GPU) and per trial (the GPU's
clocks, temperature and power at the start and end, and whether another process used the GPU).

NVML comes from ``workers.measure.nvml``: where it is missing or fails (no driver, a container
without the NVML library) the NVML columns are null, nothing else.

Asking costs no torch import: library versions come from the modules where this process has
imported them (a worker), else from the installed packages (the driver, which never imports
torch): ``torch/version.py`` read as text, and the cuDNN wheel's version. The keys are the same.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import platform
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

from workers.measure import nvml
from workers.row import Row


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def driver_version() -> str | None:
    nv = nvml.load()
    if nv is not None:
        try:
            return nvml.text(nv.nvmlSystemGetDriverVersion())
        except Exception:
            pass
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            first = f.readline()
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ..."
        for tok in first.split():
            if tok.count(".") >= 1 and tok.replace(".", "").isdigit():
                return tok
    except OSError:
        pass
    return None


def dist_version(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` (distribution names) that is installed."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _version(module: str, *dists: str) -> str | None:
    """``module.__version__`` where this process imported it, else the installed package's version."""
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    return dist_version(*(dists or (module,)))


@functools.cache
def torch_build() -> dict[str, str | None]:
    """``__version__`` and ``cuda`` of the installed torch, read from ``torch/version.py`` without
    importing torch (its wheel's metadata version lacks the ``+cu130`` part)."""
    found: dict[str, str | None] = {"__version__": None, "cuda": None}
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return found
    try:
        tree = ast.parse((Path(spec.submodule_search_locations[0]) / "version.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return found
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id in found and getattr(node, "value", None) is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            found[target.id] = None if value is None else str(value)
    return found


def _cudnn_installed() -> str | None:
    """The cuDNN wheel's version in torch's numbering (9.24.0.43 -> 92400), or None."""
    v = dist_version("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11")
    try:
        major, minor, patch = (int(x) for x in (v or "").split(".")[:3])
    except ValueError:
        return None
    return str(major * (10000 if major >= 9 else 1000) + minor * 100 + patch)


def versions() -> Row:
    """Library versions, CUDA, driver and CPU; never imports torch (see the module's docstring)."""
    out = dict(_installed_versions())
    torch = sys.modules.get("torch")
    if torch is not None:
        out.update(_torch_versions())
    return out


@functools.cache
def _installed_versions() -> Row:
    build = torch_build()
    return {
        "torch_version": build["__version__"] or dist_version("torch"),
        "ort_version": _version("onnxruntime", "onnxruntime-gpu", "onnxruntime"),
        "onnx_version": _version("onnx"),
        "ray_version": _version("ray"),
        "python_version": platform.python_version(),
        "cuda_version": build["cuda"],
        "cudnn_version": _cudnn_installed() if build["cuda"] else None,
        "driver_version": driver_version(),
        "cpu_model": cpu_model(),
    }


@functools.cache
def _torch_versions() -> Row:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    # str(): torch.__version__ is a TorchVersion, and unpickling one in the driver would import torch
    return {"torch_version": str(torch.__version__), "cuda_version": torch.version.cuda,
            "cudnn_version": str(cudnn) if cudnn else None}


def device_facts(device: str) -> Row:
    """device_name, gpu_uuid and node for a worker running on ``device``."""
    facts: Row = {"node": socket.gethostname(), "gpu_uuid": None}
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        facts["device_name"] = props.name
        uuid = getattr(props, "uuid", None)
        facts["gpu_uuid"] = f"GPU-{uuid}" if uuid is not None else None
    else:
        facts["device_name"] = cpu_model()
    return facts


class EnvInfo(Row, total=False):
    """A process's environment, as the run's Parquet metadata stores it: its version and device columns
    (as a row has them), and where it ran."""

    host: str
    pid: int
    worker: str  # a worker's (the driver's has none)
    device_error: str  # why its device could not be described


def environment(device: str) -> EnvInfo:
    """The run-level environment of this process (for the Parquet schema metadata)."""
    env: EnvInfo = {"host": socket.gethostname(), "pid": os.getpid(), **versions()}
    try:
        env.update(device_facts(device))
    except Exception as exc:  # a driver that can't see CUDA: say so rather than fail the run
        env["device_error"] = f"{type(exc).__name__}: {exc}"
    return env


def visible_gpus() -> list[str] | None:
    """Names of the GPUs this process's CUDA would see, from NVML (no CUDA context, no torch);
    None where NVML is absent (no NVIDIA driver, or no ``nvidia-ml-py``).

    Honours ``CUDA_VISIBLE_DEVICES`` as CUDA does: indices or UUID prefixes, up to the first
    entry that names no GPU.
    """
    nv = nvml.load()
    if nv is None:
        return None
    try:
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        gpus = [(nvml.text(nv.nvmlDeviceGetUUID(h)), nvml.text(nv.nvmlDeviceGetName(h))) for h in handles]
    except Exception:
        return None
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [name for _, name in gpus]
    picked: list[str] = []
    for token in (t.strip() for t in mask.split(",")):
        if token.isdigit() and int(token) < len(gpus):
            picked.append(gpus[int(token)][1])
        elif token.startswith("GPU-") and (hit := [n for u, n in gpus if u.startswith(token)]):
            picked.append(hit[0])
        else:
            break
    return picked


def gpu_state(uuid: str | None, suffix: str) -> Row:
    """Clocks (MHz), temperature (C) and power (W) of the GPU ``uuid`` now; nulls without NVML."""
    cols: Row = {f"gpu_{k}_{suffix}": None for k in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w")}
    h = nvml.handle(uuid)
    if h is None:
        return cols
    nv = nvml.load()
    reads = {
        "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
        "temp_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        "power_w": lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
    }
    for k, read in reads.items():
        try:
            cols[f"gpu_{k}_{suffix}"] = float(read())
        except Exception:
            pass
    return cols


def other_gpu_processes(uuid: str | None) -> list[int] | None:
    """PIDs of the other processes with a compute context on GPU ``uuid``; None without NVML.

    Inside a container NVML reports host PIDs, so our own PID may not be among them; then one
    process is taken to be us (this process holds a context on the GPU during the trial), two where
    the worker that started this process holds one too.
    """
    h = nvml.handle(uuid)
    if h is None:
        return None
    try:
        pids = [int(p.pid) for p in nvml.load().nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception:
        return None
    me = os.getpid()
    ours = {me, *_parent_with_context()}  # a worker waiting on this process (workers.processes) runs nothing
    if me in pids:
        return [p for p in pids if p not in ours]
    return sorted(pids)[len(ours):] if pids else []


#: The pid of the worker that started this process, where it holds a CUDA context (``workers.processes``).
PARENT_GPU_PID_ENV = "INFER_ORCH_PARENT_GPU_PID"


def _parent_with_context() -> list[int]:
    pid = os.environ.get(PARENT_GPU_PID_ENV)
    return [int(pid)] if pid and pid.isdigit() else []


def gpu_utilization(uuid: str | None) -> int | None:
    """NVML's utilization of GPU ``uuid`` now: the % of its last sample period in which a kernel ran."""
    h = nvml.handle(uuid)
    if h is None:
        return None
    try:
        return int(nvml.load().nvmlDeviceGetUtilizationRates(h).gpu)
    except Exception:
        return None


#: How often the GPU's process list is read during timing (by the trial's sampler thread), s.
CONTENTION_PERIOD_S = 0.5
#: How often its utilization is read then, s (NVML averages it over about 1/6 s to 1 s, by GPU).
UTIL_PERIOD_S = 0.2

#: The per-trial NVML columns (null on a CPU trial or without NVML).
GPU_COLUMNS = tuple(f"gpu_{k}_{when}" for k in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w")
                    for when in ("start", "end")) + ("contended", "gpu_other_pids", "contention_checks",
                                                                 "gpu_util_pct")


class GpuWatch:
    """NVML facts at the start and end of a trial's timing, and the contention check: the GPU's
    process list read at the start, every ``period_s`` while timing runs (on the sampler thread,
    between ``watch(True)`` and ``watch(False)``: ``workers.measure.timing.measure``'s ``on_timed``) and at
    the end. ``close`` stops the thread if timing ended early (an exception)."""

    def __init__(self, uuid: str | None, period_s: float = CONTENTION_PERIOD_S) -> None:
        self.uuid, self.period_s = uuid, period_s
        self.start = gpu_state(uuid, "start")
        self.reads: list[list[int]] = []
        self.util: list[int] = []  # during timing only
        self._read()
        self._sampler: Any = None

    def _read(self) -> None:
        others = other_gpu_processes(self.uuid)
        if others is not None:
            self.reads.append(others)

    def __call__(self, starting: bool) -> None:
        if starting:
            from workers.measure.sampler import Sampler

            self._sampler = Sampler({"others": (lambda: other_gpu_processes(self.uuid), self.period_s),
                                     "util": (lambda: gpu_utilization(self.uuid), UTIL_PERIOD_S)})
        else:
            self.close()

    def close(self) -> None:
        if self._sampler is not None:
            readings = self._sampler.stop()
            self.reads += [v for _, v in readings["others"]]
            self.util += [v for _, v in readings["util"]]
            self._sampler = None

    def finish(self) -> Row:
        self.close()
        end = gpu_state(self.uuid, "end")
        self._read()
        if not self.reads:
            contended, pids, checks = None, None, None
        else:
            pids = sorted(set().union(*map(set, self.reads)))
            contended, checks = bool(pids), len(self.reads)
        util = float(statistics.median(self.util)) if self.util else None
        return {**self.start, **end, "contended": contended, "gpu_other_pids": pids, "contention_checks": checks,
                "gpu_util_pct": util}


def merge_watches(repeats: list[Row]) -> Row:
    """The GPU columns of a trial measured in several repeats: the first's start, the last's end,
    contended if any repeat was, every other process seen, every check counted."""
    if not repeats:
        return dict.fromkeys(GPU_COLUMNS)
    out = {k: v for k, v in repeats[0].items() if k.endswith("_start")}
    out.update({k: v for k, v in repeats[-1].items() if k.endswith("_end")})
    known = [r for r in repeats if r.get("contended") is not None]
    out.update(contended=any(r["contended"] for r in known) if known else None,
               gpu_other_pids=sorted({p for r in known for p in r["gpu_other_pids"] or []}) if known else None,
               contention_checks=sum(r["contention_checks"] or 0 for r in known) if known else None)
    utils = [r["gpu_util_pct"] for r in repeats if r.get("gpu_util_pct") is not None]
    out["gpu_util_pct"] = float(statistics.median(utils)) if utils else None
    return out
