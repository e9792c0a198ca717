"""How far a launch-bound median moves between fresh processes, pinned or not (BENCHMARKS.md, "A/A on the GPU").

Whether pinning the process to CPUs steadies a host-bound median.

A launch-bound trial (eager mode at batch 1: the GPU waits on Python) measures the host as much as
the GPU, and an A/A run (``bench/aa.py``) found such medians 5-58% apart between two runs of the
same plan on the same machine, while CUDA-graph trials stayed within 1-2%. This separates the
causes: for each case and affinity mode, ``--procs`` fresh processes each time ``--windows``
windows of ``--window-s`` seconds with a hand-written loop (``bench/hand.py``: CUDA events around
each step); per window its median. Printed per (case, mode): the median of all windows, the spread
of the processes' medians ((max - min) / median, between processes) and the largest spread of
windows within one process.

Modes: ``free`` (the scheduler places the thread), ``local`` (``sched_setaffinity`` to the CPUs
the GPU is attached to, from sysfs), ``one`` (one CPU of that set, the same in every process).

Usage (on a GPU; about 3 minutes)::

    PYTHONPATH=$PWD python bench/host_jitter.py --out $OUT/jitter
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CASES = {"mobilenet_v2 eager b1 fp16": ("torchvision:mobilenet_v2", "torch-eager", 1, "fp16"),
         "resnet18 eager b1 fp32": ("torchvision:resnet18", "torch-eager", 1, "fp32"),
         "resnet18 cudagraph b1 fp32": ("torchvision:resnet18", "torch-cudagraph", 1, "fp32")}


def gpu_local_cpus() -> list[int]:
    """The CPUs local to GPU 0, as infer-orch pins its timing thread (``workers.measure.affinity``)."""
    from workers.measure import affinity, nvml

    nv = nvml.load()
    return affinity.local_cpus(nv, nv.nvmlDeviceGetHandleByIndex(0)) if nv else sorted(os.sched_getaffinity(0))


def child(spec: dict[str, Any]) -> None:
    """One fresh process: pin as told, build the case, time its windows; print them as JSON."""
    if spec["cpus"]:
        os.sched_setaffinity(0, spec["cpus"])
    from bench import hand
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.models.build import ModelStore

    model, variant, batch, dtype = CASES[spec["case"]]
    device = spec["device"]
    plan = {"name": "jitter", "device": device, "models": [model],
            "matrix": {"batch_sizes": [batch], "dtypes": [dtype], "backends": ["torch-eager"]}}
    (trial,) = expand(parse_plan(plan))
    step, cleanup = hand.make_step(variant, ModelStore(0), trial.model, batch, dtype, device, trial.seed)
    windows = [hand.median(hand.time_loop(step, device, warmup=50 if i == 0 else 0, min_time_s=spec["window_s"],
                                          max_iters=100_000)) for i in range(spec["windows"])]
    cleanup()
    print(json.dumps({"windows_ms": windows, "cpu": len(os.sched_getaffinity(0))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="directory for jitter.json (required)")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=1.0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script (eager cases only)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not args.out:
        ap.error("--out is required")
    import numpy as np

    args.out.mkdir(parents=True, exist_ok=True)
    local = gpu_local_cpus()
    modes = {"free": [], "local": local, "one": local[len(local) // 2:][:1]}
    print(f"CPUs: {os.cpu_count()}, local to GPU 0: {len(local)} ({local[0]}-{local[-1]})", flush=True)
    results = []
    for case in args.cases.split(","):
        for mode, cpus in modes.items():
            procs = []
            for _ in range(args.procs):
                spec = {"case": case, "device": args.device, "cpus": cpus, "windows": args.windows,
                        "window_s": args.window_s}
                path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
                p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                   text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
                if p.returncode:
                    raise SystemExit(f"{case} {mode}: {p.stderr[-2000:]}")
                procs.append(json.loads(p.stdout.strip().splitlines()[-1])["windows_ms"])
            w = np.asarray(procs)
            med = np.median(w, axis=1)
            r = {"case": case, "mode": mode, "cpus": len(cpus) or os.cpu_count(), "windows_ms": procs,
                 "median_ms": float(np.median(w)), "between_procs": float((med.max() - med.min()) / np.median(w)),
                 "within_proc": float(((w.max(axis=1) - w.min(axis=1)) / med).max())}
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "windows_ms"}), flush=True)
            (args.out / "jitter.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'case':28s} {'mode':6s} {'cpus':>4s} {'median ms':>9s} {'between procs':>13s} {'within one':>10s}")
    for r in results:
        print(f"{r['case']:28s} {r['mode']:6s} {r['cpus']:4d} {r['median_ms']:9.3f} {100 * r['between_procs']:12.1f}% "
              f"{100 * r['within_proc']:9.1f}%")


if __name__ == "__main__":
    main()
