"""NVML, the one place it is loaded: ``nvidia-ml-py`` (module ``pynvml``), imported and initialised
lazily, once per process. Where it is missing or fails (no driver, a container without the NVML
library) ``load`` gives None and every NVML reading of the callers is null, nothing else.

The modules that read the GPU through NVML (``envinfo``, ``energy``, ``memory``, ``affinity``)
take it and their handles from here, and import nothing else of each other for it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def load() -> Any:
    """The initialised pynvml module, or None."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def handle(uuid: str | None) -> Any:
    """NVML's handle of the GPU ``uuid``, or None (no NVML, no uuid, or no such GPU)."""
    nv = load()
    if nv is None or not uuid:
        return None
    try:
        return nv.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        return None


def text(v: Any) -> str:
    """An NVML string as text (older bindings return bytes)."""
    return v.decode() if isinstance(v, bytes) else str(v)
