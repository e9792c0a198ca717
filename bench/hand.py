"""Hand-written inference loops: what a performance engineer writes to check a number.

They share only the model's weights, the input and the ONNX file with infer-orch (so both time
the same computation); everything else (sessions, bindings, graph capture, the timing loop) is
written out here, plainly, independently of ``workers/backends``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def make_step(variant: str, store: Any, spec: Any, batch: int, dtype: str, device: str,
              seed: int = 0) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(step, cleanup) for one variant: torch-eager, torch-cudagraph, ort-run, ort-iobind, ort-iobind-graph."""
    import torch

    from workers.models import make_input, onnx_export

    if variant.startswith("torch"):
        model = store.torch_model(spec, device, dtype)
        x = make_input(spec, batch, dtype, device, seed)
        if variant == "torch-eager":
            def eager() -> Any:
                with torch.inference_mode():
                    return model(x)
            return eager, lambda: None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            y = model(x)
        torch.cuda.synchronize()
        alive = [model, x, y]  # the graph reads and writes these addresses on every replay
        return g.replay, alive.clear

    import onnxruntime as ort

    path, _ = onnx_export(store, spec, batch, dtype)
    on_gpu = device == "cuda"
    graph = variant == "ort-iobind-graph"
    if on_gpu:
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": 0, "enable_cuda_graph": "1" if graph else "0"})]
    else:
        providers = ["CPUExecutionProvider"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not on_gpu:
        so.intra_op_num_threads = 1  # as infer-orch gives a CPU trial its worker's share (1 CPU here)
    sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    x = make_input(spec, batch, dtype, "cpu", seed).numpy()
    name = sess.get_inputs()[0].name
    if variant == "ort-run":
        return (lambda: sess.run(None, {name: x})), lambda: None
    # The output's shape from the model (static in infer-orch's exports), not from a plain run: ORT
    # captures its CUDA graph on the first run, and a plain one would be what every replay repeats.
    shape = tuple(sess.get_outputs()[0].shape)
    dev_x = torch.from_numpy(x).to(device)
    dev_y = torch.empty(shape, dtype=dev_x.dtype, device=device)
    b = sess.io_binding()
    b.bind_input(name, device, 0, x.dtype, tuple(x.shape), dev_x.data_ptr())
    b.bind_output(sess.get_outputs()[0].name, device, 0, x.dtype, shape, dev_y.data_ptr())
    keep = [dev_x, dev_y]
    return (lambda: sess.run_with_iobinding(b)), keep.clear


def time_loop(step: Callable[[], Any], device: str, warmup: int = 20, min_iters: int = 50,
              min_time_s: float = 1.0, max_iters: int = 400) -> list[float]:
    """Warm up, then one sample per inference: CUDA events around the step and a sync (GPU), or
    perf_counter (CPU). At least ``min_iters`` and ``min_time_s``, at most ``max_iters``."""
    import torch

    for _ in range(warmup):
        step()
    out: list[float] = []
    t0 = time.perf_counter()
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        while len(out) < max_iters and (len(out) < min_iters or time.perf_counter() - t0 < min_time_s):
            start.record()
            step()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    else:
        while len(out) < max_iters and (len(out) < min_iters or time.perf_counter() - t0 < min_time_s):
            t = time.perf_counter()
            step()
            out.append((time.perf_counter() - t) * 1e3)
    return out


def median(a: list[float]) -> float:
    return float(np.median(np.asarray(a)))
