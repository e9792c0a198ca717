"""Facts about the worker's environment that go into every row."""

from __future__ import annotations

import functools
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


def driver_version() -> str | None:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
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


@functools.cache
def versions() -> dict[str, Any]:
    import torch

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "torch_version": torch.__version__,
        "ort_version": ort_version,
        "cuda_version": torch.version.cuda,
        "driver_version": driver_version() if torch.cuda.is_available() else None,
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
