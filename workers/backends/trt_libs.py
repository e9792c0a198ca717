"""Can ONNX Runtime's TensorRT execution provider load here? Asked without a GPU or a session.

``onnxruntime-gpu`` wheels list ``TensorrtExecutionProvider`` as available whether or not the
TensorRT libraries are installed; a session asking for it then fails (or falls back) only when
created on a GPU. This module loads the libraries the provider library names, so a trial can
be skipped, and ``infer-orch backends`` can say what is missing, before any session exists.
"""

from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

TRT_PROVIDER = "TensorrtExecutionProvider"
# What ORT TensorRT providers built for TensorRT 10 link to, should the provider library not say.
TRT_LIBS_FALLBACK = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")


def _trt_sonames(provider_lib: Path) -> list[str]:
    """The TensorRT sonames ORT's TensorRT provider library names (its DT_NEEDED and dlopen strings)."""
    try:
        blob = provider_lib.read_bytes()
    except OSError:
        return list(TRT_LIBS_FALLBACK)
    found = re.findall(rb"lib(?:nvinfer|nvonnxparser)[A-Za-z_]*\.so\.\d+", blob)
    return sorted({f.decode() for f in found}) or list(TRT_LIBS_FALLBACK)


def _load(soname: str) -> bool:
    """dlopen ``soname`` from the loader's path, or from the pip ``tensorrt_libs`` package."""
    dirs = [""]
    try:
        import tensorrt_libs  # pip's TensorRT wheels; not on the loader's path by themselves

        dirs.append(str(Path(tensorrt_libs.__file__).parent) + "/")
    except ImportError:
        pass
    for d in dirs:
        try:
            # RTLD_GLOBAL: once loaded, ORT's own dlopen of the same soname finds it.
            ctypes.CDLL(d + soname, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


@functools.cache
def tensorrt_missing() -> str | None:
    """Why ORT's TensorRT provider can't run in this process (what is missing), or None.

    Loads the TensorRT shared libraries only: no GPU, no session, so it is cheap and safe to ask
    anywhere (``infer-orch backends``, a trial's skip check).
    """
    try:
        import onnxruntime
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc})"
    if TRT_PROVIDER not in onnxruntime.get_available_providers():
        return f"this onnxruntime build ({onnxruntime.__version__}) has no TensorRT execution provider"
    lib = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    missing = [name for name in _trt_sonames(lib) if not _load(name)]
    if missing:
        return (f"the TensorRT libraries are not installed or not on the loader's path: missing "
                f"{', '.join(missing)} (onnxruntime {onnxruntime.__version__} lists TensorrtExecutionProvider, "
                "but it can't load without them)")
    return None
