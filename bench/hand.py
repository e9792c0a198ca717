"""Hand-written inference loops for bench/fidelity.py (BENCHMARKS.md, "One request at a time").

What a performance engineer writes to check a number.

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
              seed: int = 0, axes: dict[str, int] | None = None) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(step, cleanup) for one variant: torch-eager, torch-cudagraph, ort-run, ort-iobind, ort-iobind-graph.

    Every input of the model (one, or several named ones with ``axes`` giving their named dims) is
    made as infer-orch makes it, and with ORT every input and output is bound."""
    import torch

    from workers.models.build import call_model, make_inputs, onnx_artifact

    axes = axes or {}
    if variant.startswith("torch"):
        model = store.torch_model(spec, device, dtype)
        xs = make_inputs(spec, batch, dtype, device, seed, axes)
        if variant == "torch-eager":
            def eager() -> Any:
                with torch.inference_mode():
                    return call_model(spec, model, xs)
            return eager, lambda: None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                call_model(spec, model, xs)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g):
            y = call_model(spec, model, xs)
        torch.cuda.synchronize()
        alive = [model, xs, y]  # the graph reads and writes these addresses on every replay
        return g.replay, alive.clear

    import onnxruntime as ort

    path = onnx_artifact(store, spec, batch, dtype, axes=axes).path
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
    host = {k: v.numpy() for k, v in make_inputs(spec, batch, dtype, "cpu", seed, axes).items()}
    names = [i.name for i in sess.get_inputs()]
    feed = dict(zip(names, host.values()))
    if variant == "ort-run":
        return (lambda: sess.run(None, feed)), lambda: None
    # The outputs' shapes from the model (static in infer-orch's exports), not from a plain run: ORT
    # captures its CUDA graph on the first run, and a plain one would be what every replay repeats.
    b = sess.io_binding()
    keep = []
    for name, x in feed.items():
        dev_x = torch.from_numpy(x).to(device)
        b.bind_input(name, device, 0, x.dtype, tuple(x.shape), dev_x.data_ptr())
        keep.append(dev_x)
    np_types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
    for o in sess.get_outputs():
        shape = tuple(o.shape)
        np_type = np_types[o.type]
        dev_y = torch.empty(shape, dtype=getattr(torch, np.dtype(np_type).name), device=device)
        b.bind_output(o.name, device, 0, np_type, shape, dev_y.data_ptr())
        keep.append(dev_y)
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
