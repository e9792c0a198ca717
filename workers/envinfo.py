"""Facts about the worker's environment: per run (versions, host, GPU) and per trial (the GPU's
clocks, temperature and power at the start and end, and whether another process used the GPU).

NVML comes from ``nvidia-ml-py`` (module ``pynvml``), imported lazily: where it is missing or
fails (no driver, a container without the NVML library) the NVML columns are null, nothing else.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
from typing import Any


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


@functools.cache
def _nvml() -> Any:
    """The initialised pynvml module, or None."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def driver_version() -> str | None:
    nv = _nvml()
    if nv is not None:
        try:
            return _text(nv.nvmlSystemGetDriverVersion())
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


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


@functools.cache
def versions() -> dict[str, Any]:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "torch_version": torch.__version__,
        "ort_version": _version("onnxruntime"),
        "onnx_version": _version("onnx"),
        "ray_version": _version("ray"),
        "python_version": platform.python_version(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": str(cudnn) if cudnn else None,
        "driver_version": driver_version() if torch.cuda.is_available() else None,
        "cpu_model": cpu_model(),
    }


def device_facts(device: str) -> dict[str, Any]:
    """device_name, gpu_uuid and node for a worker running on ``device``."""
    facts: dict[str, Any] = {"node": socket.gethostname(), "gpu_uuid": None}
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        facts["device_name"] = props.name
        uuid = getattr(props, "uuid", None)
        facts["gpu_uuid"] = f"GPU-{uuid}" if uuid is not None else None
    else:
        facts["device_name"] = cpu_model()
    return facts


def environment(device: str) -> dict[str, Any]:
    """The run-level environment of this process (for the Parquet schema metadata)."""
    env: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), **versions()}
    try:
        env.update(device_facts(device))
    except Exception as exc:  # a driver that can't see CUDA: say so rather than fail the run
        env["device_error"] = f"{type(exc).__name__}: {exc}"
    return env


def _handle(uuid: str | None) -> Any:
    nv = _nvml()
    if nv is None or not uuid:
        return None
    try:
        return nv.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        return None


def gpu_state(uuid: str | None, suffix: str) -> dict[str, Any]:
    """Clocks (MHz), temperature (C) and power (W) of the GPU ``uuid`` now; nulls without NVML."""
    cols: dict[str, Any] = {f"gpu_{k}_{suffix}": None for k in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w")}
    h = _handle(uuid)
    if h is None:
        return cols
    nv = _nvml()
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
    process is taken to be us (this process holds a context on the GPU during the trial).
    """
    h = _handle(uuid)
    if h is None:
        return None
    try:
        pids = [int(p.pid) for p in _nvml().nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception:
        return None
    me = os.getpid()
    if me in pids:
        return [p for p in pids if p != me]
    return sorted(pids)[1:] if pids else []


#: The per-trial NVML columns (null on a CPU trial or without NVML).
GPU_COLUMNS = tuple(f"gpu_{k}_{when}" for k in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w")
                    for when in ("start", "end")) + ("contended", "gpu_other_pids")


class GpuWatch:
    """NVML facts at the start and end of a trial's timing, and the contention check."""

    def __init__(self, uuid: str | None) -> None:
        self.uuid = uuid
        self.start = gpu_state(uuid, "start")
        self.others_start = other_gpu_processes(uuid)

    def finish(self) -> dict[str, Any]:
        end = gpu_state(self.uuid, "end")
        others_end = other_gpu_processes(self.uuid)
        if self.others_start is None and others_end is None:
            contended, pids = None, None
        else:
            pids = sorted(set(self.others_start or []) | set(others_end or []))
            contended = bool(pids)
        return {**self.start, **end, "contended": contended, "gpu_other_pids": pids}
