"""ONNX Runtime's side of the ort backend (``workers.backends.ort``): ORT's names for providers and
optimisation levels, and the outputs of a session (their names, shapes and types) learnt without
running it where its graph fixes them, else from one run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
             "tensor(int32)": "int32", "tensor(double)": "float64", "tensor(bool)": "bool"}


def static_outputs(sess: Any) -> list[tuple[str, tuple[int, ...], Any]] | None:
    """The session's outputs as (name, shape, numpy dtype) when every dim is fixed, else None."""
    import numpy as np

    out = []
    for o in sess.get_outputs():
        if o.type not in ORT_TYPES or not all(isinstance(d, int) and d >= 0 for d in o.shape):
            return None
        out.append((o.name, tuple(o.shape), np.dtype(ORT_TYPES[o.type])))
    return out


def probe_outputs(path: Any, so: Any, providers: list[Any],
                   feeds: dict[str, np.ndarray]) -> list[tuple[str, tuple[int, ...], Any]]:
    """(name, shape, numpy dtype) of each output of a model with dynamic output dims: one plain run
    of a throwaway session with the same providers, the CUDA graph off."""
    import onnxruntime as ort

    plain = [(p[0], {**p[1], "enable_cuda_graph": "0"}) if isinstance(p, tuple) and p[0] == PROVIDERS["cuda"]
             else p for p in providers]
    probe = ort.InferenceSession(str(path), sess_options=so, providers=plain)
    return output_meta(probe, probe.run(None, feeds))


def output_meta(sess: Any, outs: list[np.ndarray]) -> list[tuple[str, tuple[int, ...], Any]]:
    """(name, shape, numpy dtype) of each output, from the arrays one run of ``sess`` returned."""
    return [(o.name, r.shape, r.dtype) for o, r in zip(sess.get_outputs(), outs)]


def ort_version() -> tuple[int, int]:
    import onnxruntime

    major, minor = onnxruntime.__version__.split(".")[:2]
    return int(major), int(minor)
