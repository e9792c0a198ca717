"""Hand-written loops vs ``workers.trial.run_trial`` in one plain process (ResNet-50, batch 1, fp32).

Prints the median per-iteration latency of: torch eager (pipelined, and synchronized per
iteration), ORT ``session.run`` with numpy, and the same two trials through infer-orch's runner.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
import torch

from workers.models import ModelStore, onnx_export
from workers.trial import run_trial

SPEC = {"kind": "torchvision", "ref": "resnet50", "name": "resnet50", "input_shape": [3, 224, 224]}
MEASURE = {"warmup_iters": 20, "iters": 200, "min_time_s": 0, "max_time_s": 30}


def pipelined(fn, n=200):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def synced(fn, n=200):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def main() -> None:
    store = ModelStore()
    model = store.torch_model(SPEC, "cuda", "fp32")
    x = torch.randn(1, 3, 224, 224, device="cuda")

    def eager():
        with torch.inference_mode():
            model(x)

    print("threads", torch.get_num_threads(), "cpus", os.cpu_count())
    print("eager pipelined", pipelined(eager), "sync-median", synced(eager))
    path, _ = onnx_export(store, SPEC, 1, "fp32")
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    xn = x.cpu().numpy()

    def ort_run():
        sess.run(None, {"input": xn})

    print("ort run numpy pipelined", pipelined(ort_run), "sync-median", synced(ort_run))
    trial = {"trial_id": "x", "plan": "p", "model": SPEC, "backend": "torch-eager", "label": "e",
             "options": {"channels_last": False}, "batch_size": 1, "dtype": "fp32", "io": "device",
             "device": "cuda", "measure": MEASURE, "seed": 0}
    r = run_trial(trial, "cuda", store, cpus=16)
    print("run_trial eager median", r["latency_ms_median"], "host", r["host_ms_median"])
    ort_trial = dict(trial, backend="ort", io="host", options={"providers": ["cuda"]})
    r = run_trial(ort_trial, "cuda", store, cpus=16)
    print("run_trial ort-default median", r["latency_ms_median"], "host", r["host_ms_median"], r.get("error"))


if __name__ == "__main__":
    main()
