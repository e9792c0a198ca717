"""The same launch-bound loop (ResNet-50 eager, batch 1) in a plain process, a Ray actor and a
Ray task: does running inside Ray slow it? Prints (median ms, p99 ms, process facts) for each."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import ray


def bench(switch_interval=None):
    import torch
    import torchvision

    if switch_interval:
        sys.setswitchinterval(switch_interval)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().cuda()
    x = torch.randn(1, 3, 224, 224, device="cuda")

    def fn():
        with torch.inference_mode():
            model(x)

    for _ in range(30):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(300):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    info = {"threads": threading.active_count(), "affinity": len(os.sched_getaffinity(0)),
            "omp": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}
    return float(np.median(ts)) * 1e3, float(np.percentile(ts, 99)) * 1e3, info


class Bench:
    def run(self, *args):
        return bench(*args)


def main() -> None:
    print("plain", bench())
    ray.init(include_dashboard=False, log_to_driver=False)
    actor = ray.remote(num_gpus=1, num_cpus=16)(Bench).remote()
    print("actor", ray.get(actor.run.remote()))
    print("actor again", ray.get(actor.run.remote()))
    print("actor switch 0.05", ray.get(actor.run.remote(0.05)))
    ray.kill(actor)
    time.sleep(1)
    print("task", ray.get(ray.remote(num_gpus=1, num_cpus=16)(bench).remote()))


if __name__ == "__main__":
    main()
