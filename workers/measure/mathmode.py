"""The arithmetic of an fp32 trial: ``math: tf32`` (matmuls and convolutions may use TF32 tensor
cores) or ``math: strict`` (IEEE fp32), set on every backend and read back from each library.

Why it is a trial field: the libraries' defaults differ. PyTorch runs fp32 matmuls in IEEE fp32
(``float32_matmul_precision == "highest"``) but lets cuDNN use TF32 for convolutions; ONNX
Runtime's CUDA provider uses TF32 for both (``use_tf32``); TensorRT allows TF32 unless the process
was started with ``NVIDIA_TF32_OVERRIDE=0``. Two rows labelled "fp32" ran different arithmetic
unless the mode is set on both sides. ``tf32`` is the default everywhere (what ORT does by
default, and what PyTorch recommends for inference on Ampere and later).

::

    torch (every torch backend; torch.compile inherits it):
        cuda.matmul, cudnn.conv, cudnn.rnn .fp32_precision = "tf32" | "ieee"
        read back: the same knobs ("none" inherits from its parent; unset matmul is "ieee")
    ORT CUDA provider:   provider option use_tf32 = "1" | "0"; read back from the session's provider options
    ORT TensorRT:        no option; TF32 unless NVIDIA_TF32_OVERRIDE=0 was set before CUDA loaded: a strict
                         trial is skipped in a worker without it (TENSORRT_STRICT)
    CPU:                 no TF32; torch reads back oneDNN's matmul precision, ORT's CPU provider is strict

The row's ``math_effective`` is what the libraries report: ``tf32``, ``strict`` or ``mixed (...)``
naming each part. Rows of runs made before the field have it null, read as "library default".
"""

from __future__ import annotations

import os
from typing import Any

MODES = ("tf32", "strict")
DEFAULT = "tf32"
#: How a row without ``math_effective`` (a run made before it was recorded) reads.
LIBRARY_DEFAULT = "library default"
#: NVIDIA's switch that turns TF32 off in cuBLAS, cuDNN and TensorRT for the whole process.
OVERRIDE_ENV = "NVIDIA_TF32_OVERRIDE"
TENSORRT_STRICT = (f"math: strict on ORT's TensorRT provider needs {OVERRIDE_ENV}=0 set for the whole worker process "
                   "before CUDA loads (TensorRT has no TF32 option of its own); this worker runs without it")


def overridden() -> bool:
    """True when ``NVIDIA_TF32_OVERRIDE=0`` turns TF32 off in this process, whatever the libraries ask."""
    return os.environ.get(OVERRIDE_ENV) == "0"


def effective(trial: Any) -> str:
    """The trial's math mode: its field for an fp32 trial; fp16/bf16 trials run the default (TF32
    concerns fp32 arithmetic only, so their ids and rows don't carry it)."""
    return trial.math if trial.dtype == "fp32" else DEFAULT


def apply_torch(mode: str) -> None:
    """Set torch's fp32 matmul and cuDNN precision for ``mode`` (process-wide: every trial sets its own)."""
    import torch

    b = torch.backends
    value = "tf32" if mode == "tf32" else "ieee"
    knobs = [o for o in (b.cuda.matmul, b.cudnn.conv, getattr(b.cudnn, "rnn", None)) if hasattr(o, "fp32_precision")]
    if knobs:  # torch >= 2.9: the legacy allow_tf32 flags may not be mixed with these
        for o in knobs:
            o.fp32_precision = value
        return
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = mode == "tf32"  # pragma: no cover - torch < 2.9


def _resolved(*chain: Any) -> str:
    """The first set ``fp32_precision`` along a knob's chain of parents ("none" inherits)."""
    for o in chain:
        v = getattr(o, "fp32_precision", "none")
        if v != "none":
            return v
    return "ieee"


def torch_effective(device: str) -> str:
    """What torch reports it runs fp32 math in on ``device``."""
    import torch

    b = torch.backends
    if device != "cuda":
        mkl = getattr(getattr(b, "mkldnn", None), "matmul", None)
        v = _resolved(mkl, getattr(b, "mkldnn", None))
        return "strict" if v == "ieee" else f"mixed (oneDNN matmul {v})"
    if overridden():
        return "strict"
    if hasattr(b.cuda.matmul, "fp32_precision"):
        matmul = _resolved(b.cuda.matmul)
        conv = _resolved(b.cudnn.conv, b.cudnn)
    else:  # pragma: no cover - torch < 2.9
        matmul = "tf32" if b.cuda.matmul.allow_tf32 else "ieee"
        conv = "tf32" if b.cudnn.allow_tf32 else "ieee"
    return combine({"matmul": _mode(matmul), "conv": _mode(conv)})


def _mode(precision: str) -> str:
    return "tf32" if precision == "tf32" else "strict" if precision == "ieee" else precision


def combine(parts: dict[str, str]) -> str:
    """One mode when every part agrees, else ``mixed (part mode, ...)``."""
    modes = set(parts.values())
    if len(modes) == 1:
        return modes.pop()
    return "mixed (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"


def ort_cuda_option(mode: str) -> dict[str, str]:
    """The CUDA provider's option for ``mode``."""
    return {"use_tf32": "1" if mode == "tf32" else "0"}


def ort_effective(provider_options: dict[str, dict[str, str]], providers: list[str]) -> str:
    """What an ORT session runs fp32 math in, from the options it reports (``get_provider_options``)
    for each provider it uses. The CPU provider has no TF32; TensorRT allows it unless overridden."""
    parts = {}
    for p in providers:
        if p == "CUDAExecutionProvider":
            tf32 = provider_options.get(p, {}).get("use_tf32")
            parts["cuda"] = ("strict" if overridden() or tf32 == "0" else "tf32" if tf32 == "1"
                             else "tf32 (option not reported)")
        elif p == "TensorrtExecutionProvider":
            parts["tensorrt"] = "strict" if overridden() else "tf32"
    if not parts:
        return "strict"  # the CPU provider alone
    return combine(parts)


def read(row: dict[str, Any]) -> str:
    """A row's effective math as text: null (a run made before it was recorded) is the library default."""
    return row.get("math_effective") or LIBRARY_DEFAULT
