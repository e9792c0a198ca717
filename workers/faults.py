"""Telling a device out-of-memory apart from other trial errors.

torch raises its own type (``torch.cuda.OutOfMemoryError``, a RuntimeError); ONNX Runtime raises a
generic RuntimeException whose text names the failed allocation. Both become ``status: oom`` with
the message, which says what was being allocated ("Tried to allocate 2.00 GiB", "requested buffer
of size 1073741824"), and the scheduler replaces the worker so the next trial gets a clean GPU.
"""

from __future__ import annotations

import re

#: Texts of allocation failures: torch's caching allocator, ORT's arena, CUDA, cuDNN and cuBLAS.
_OOM_TEXT = re.compile(
    r"CUDA out of memory|out of memory|Failed to allocate memory|BFCArena::AllocateRaw"
    r"|cudaErrorMemoryAllocation|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED",
    re.IGNORECASE,
)


def oom_message(exc: BaseException) -> str | None:
    """The one-line error of a device out-of-memory ``exc``, or None when it is something else."""
    name = type(exc).__name__
    text = str(exc).strip()
    if name != "OutOfMemoryError" and not _OOM_TEXT.search(text):
        return None
    # torch's message is long; its first sentence and the "Tried to allocate" part say the most.
    first = " ".join(text.split())
    return f"{name}: {first[:600]}"
