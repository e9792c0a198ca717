"""``infer-orch backends``: what this machine, or a Ray cluster, can run.

Asked without importing torch or Ray: GPUs come from NVML, versions from the installed packages,
each backend's rows from its runner class (``Runner.offers``). Only onnxruntime is imported, for
the providers its build has (the ort runner's TensorRT row needs it too).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from workers.measure import envinfo

DEVICES = ("cuda", "cpu")


def local_gpus() -> list[str] | None:
    """Names of this machine's visible GPUs (from NVML); None where NVML is absent."""
    return envinfo.visible_gpus()


def _ort_providers() -> tuple[list[str], str]:
    try:
        import onnxruntime
    except ImportError:
        return [], "not installed"
    return list(onnxruntime.get_available_providers()), onnxruntime.__version__


def describe(address: str | None = None) -> dict[str, Any]:
    """Backends with availability and dtypes, nodes with GPUs, and library versions."""
    from workers.backends import registry

    seen = local_gpus()
    gpus = seen or []
    backends = []
    for _, runner in sorted(registry().items()):
        for offer in runner.offers(len(gpus)):
            backends.append({
                "name": offer.name, "available": offer.unavailable is None,
                "dtypes": " / ".join(",".join(sorted(offer.dtypes.get(d, ()))) or "-" for d in DEVICES),
                "scenarios": ", ".join(sorted(runner.scenarios())), "note": offer.unavailable or offer.note,
            })
    providers, ort_version = _ort_providers()
    if address:
        from orchestrator.run import cluster, placement

        started = cluster.connect(address)
        try:
            nodes = [{"host": n.host, "cpus": n.cpus, "gpus": n.gpus, "gpu_models": n.accelerators}
                     for n in placement.nodes()]
        finally:
            if started:
                import ray

                ray.shutdown()
    else:
        nodes = [{"host": platform.node(), "cpus": os.cpu_count(), "gpus": len(gpus),
                  "gpu_models": sorted(set(gpus))}]
    v = envinfo.versions()
    return {
        "backends": backends,
        "nodes": nodes,
        "versions": {
            "torch": v["torch_version"] or "not installed", "cuda (torch build)": v["cuda_version"],
            "onnxruntime": ort_version, "ort providers": ", ".join(providers) or "-",
            "ray": v["ray_version"], "python": v["python_version"],
            "nvidia driver": v["driver_version"] or "-",
            "GPUs seen by": "NVML" if seen is not None else "nothing: NVML is absent here (no NVIDIA driver?)",
        },
    }
