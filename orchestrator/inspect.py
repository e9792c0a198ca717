"""``infer-orch backends``: what this machine, or a Ray cluster, can run."""

from __future__ import annotations

import platform
from typing import Any


def local_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _ort_tensorrt(gpus: list[str], cuda_dtypes: str) -> dict[str, Any]:
    """The ort backend with providers [tensorrt]: a row of its own, as it needs libraries of its own."""
    from workers.backends.trt_libs import tensorrt_missing

    reason = tensorrt_missing()
    if reason is None and not gpus:
        reason = "needs a CUDA GPU; none is visible here"
    return {"name": "ort + tensorrt", "available": reason is None, "dtypes": f"{cuda_dtypes} / -",
            "note": reason or "ort with providers tensorrt, cuda; engines cached per node"}


def describe(address: str | None = None) -> dict[str, Any]:
    """Backends with availability and dtypes, nodes with GPUs, and library versions."""
    import torch

    from workers.backends import registry

    gpus = local_gpus()
    backends = []
    for name, runner in sorted(registry().items()):
        reason = runner.unavailable()
        if reason is None and not gpus and not runner.dtypes.get("cpu"):
            reason = "needs a CUDA GPU; none is visible here"
        dtypes = " / ".join(",".join(sorted(runner.dtypes.get(d, ()))) or "-" for d in ("cuda", "cpu"))
        backends.append({"name": name, "available": reason is None, "dtypes": dtypes, "note": reason or ""})
        if name == "ort" and reason is None:
            backends.append(_ort_tensorrt(gpus, dtypes.split(" / ")[0]))
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        ort_version = onnxruntime.__version__
    except ImportError:
        providers, ort_version = [], "not installed"
    if address:
        from orchestrator import cluster

        started = cluster.connect(address)
        try:
            nodes = [{"host": n.host, "cpus": n.cpus, "gpus": n.gpus, "gpu_models": n.accelerators}
                     for n in cluster.nodes()]
        finally:
            if started:
                import ray

                ray.shutdown()
    else:
        import os

        nodes = [{"host": platform.node(), "cpus": os.cpu_count(), "gpus": len(gpus),
                  "gpu_models": sorted(set(gpus))}]
    import ray

    return {
        "backends": backends,
        "nodes": nodes,
        "versions": {
            "torch": torch.__version__, "cuda (torch build)": torch.version.cuda, "onnxruntime": ort_version,
            "ort providers": ", ".join(providers) or "-", "ray": ray.__version__, "python": platform.python_version(),
        },
    }
