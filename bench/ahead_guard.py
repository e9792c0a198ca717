"""Do builders move the numbers? (BENCHMARKS.md, "Where a sweep's worker-time goes"; docs/cluster.md).

One trial timed with builders busy and idle, alternating in one process.

    python3 bench/ahead_guard.py --out $OUT/guard                    # GPU: ResNet-50 fp16, two cases
    python3 bench/ahead_guard.py --out $OUT/guard-c --build compile  # builders compiling, a GPU visible
    python3 bench/ahead_guard.py --out /tmp/guard --device cpu --tiny  # checks the script on a CPU

The cases: batch 1 on torch eager (launch-bound: the GPU waits on the host, where builders compete)
and batch 64 on torch's CUDA graph (GPU-bound). For each, one runner is set up as a worker sets it
up (``workers.scenarios._session``) and timed in ``--rounds`` rounds of ``--round-s`` seconds on the
CPU a worker pins its timing thread to (``workers.measure.affinity``). Before each round the
builders are switched on or off, in blocks that put each state first and second equally often
(``workers.measure.paired.round_orders``, seeded). The builders are ``--builders`` processes with
``CUDA_VISIBLE_DEVICES=""`` on the other CPUs, as build-ahead tasks run, each exporting ResNet-50 to
ONNX (torch.onnx's TorchScript exporter) again and again; "idle" stops them (SIGSTOP), "busy" lets
them go on (SIGCONT), so the switch costs nothing. Each state's rounds get a warm-up of
``--warmup-s`` after the switch. With ``--build compile`` the builders are torch.compile's
build-ahead instead (``workers.backends.compile_ahead``: ResNet-50 fp16 ``reduce-overhead`` traced on
fake tensors, Inductor's code generated, each time into a fresh cache so that every round compiles),
one Inductor compile thread each, with the timed GPU visible as such a task sees it: their CUDA
contexts are on the GPU being timed.

The answer per case is the paired ratio of busy to idle per-round medians with its 95% interval
(``workers.measure.paired.paired_ratio``: rounds are the unit, so the interval holds the drift within
the process) and the verdict at a 1% threshold: ``regressed`` means the builders slow that kind of
timing beyond the within-process spread, and build-ahead should pause while it runs. Writes
``OUT/guard.json`` and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

BUILDER = """
import os, sys, tempfile, torch, torchvision
torch.set_num_threads(1)
m = torchvision.models.{model}(weights=None).eval()
x = torch.randn(1, 3, {hw}, {hw})
path = os.path.join(tempfile.mkdtemp(prefix="guard-build-"), "m.onnx")
print("ready", flush=True)
while True:
    torch.onnx.export(m, (x,), path, dynamo=False)
"""


COMPILER = """
import os, sys, tempfile
sys.path.insert(0, {repo!r})
from bench.compile_split import compile_trial
from workers.backends import compile_ahead
from workers.models.build import ModelStore
trial = compile_trial({device!r}, 64, {tiny!r})
store = ModelStore()
store.base_model(trial.model)
print("ready", flush=True)
while True:
    fresh = tempfile.mkdtemp(prefix="guard-compile-")
    os.environ["INFER_ORCH_CACHE"] = fresh
    os.environ["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
    compile_ahead.fake_compile(trial, store)
"""


def start_builders(n: int, cpus: list[int], tiny: bool, build: str = "export",
                   device: str = "cuda") -> list[subprocess.Popen]:
    """``n`` building processes on ``cpus`` (exports with no GPU, or compiles with the GPU visible);
    each has printed ``ready`` (imports done)."""
    if build == "compile":
        code = COMPILER.format(repo=str(REPO), tiny=tiny, device=device)
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    else:
        code = BUILDER.format(model="resnet18" if tiny else "resnet50", hw=64 if tiny else 224)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    procs = []
    for i in range(n):
        cpu = {cpus[i % len(cpus)]} if cpus else None
        p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda c=cpu: os.sched_setaffinity(0, c)) if cpu else None)
        procs.append(p)
    for p in procs:
        p.stdout.readline()
    return procs


def switch(procs: list[subprocess.Popen], busy: bool) -> None:
    for p in procs:
        os.kill(p.pid, signal.SIGCONT if busy else signal.SIGSTOP)


def trial_of(case: dict, device: str, tiny: bool):
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan

    model = {"torchvision": "resnet18", "input_shape": [3, 64, 64]} if tiny else "torchvision:resnet50"
    data = {"name": "guard", "device": device, "models": [model],
            "matrix": {"batch_sizes": [case["batch"]], "dtypes": [case["dtype"]], "io": ["device"],
                       "backends": [case["backend"]]}}
    (trial,) = expand(parse_plan(data))
    return trial


def time_case(trial, device: str, procs, rounds: int, round_s: float, warmup_s: float, seed: int) -> dict:
    """Per-round medians (ms) of one runner, builders on (busy) or off (idle) per round."""
    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure import affinity, paired
    from workers.measure.timing import CudaTimer, HostTimer
    from workers.models.build import ModelStore
    from workers.scenarios._session import Harness

    on_gpu = device == "cuda"
    h = Harness(get(trial.backend), TrialContext(trial=trial, device=device, store=ModelStore()), on_gpu)
    timer = CudaTimer() if on_gpu else HostTimer()
    medians = {True: [], False: []}
    orders = paired.round_orders(2, rounds, seed)
    with h.session() as s, affinity.pinned(affinity.timing_cpu(s.gpu_uuid)) as cpu:
        for order in orders:
            for state in order:
                busy = state == 1
                switch(procs, busy)
                end = time.perf_counter() + warmup_s
                while time.perf_counter() < end:
                    s.runner.step()
                timer.synchronize()
                samples, end = [], time.perf_counter() + round_s
                while time.perf_counter() < end:
                    samples.append(timer.time(s.runner.step)[0])
                medians[busy].append(float(np.median(samples)))
    switch(procs, False)
    ratio = paired.paired_ratio(medians[False], medians[True], 0.95)
    r, lo, hi = ratio if ratio else (float("nan"),) * 3
    return {"timing_cpu": cpu, "idle_ms": medians[False], "busy_ms": medians[True], "ratio": r, "low": lo,
            "high": hi, "verdict": paired.verdict(r, lo, hi, 0.01) if ratio else "too few rounds"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--builders", type=int, default=None, help="default: the CPUs but the timing one, at most 8")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--round-s", type=float, default=1.0)
    ap.add_argument("--warmup-s", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="ResNet-18 at 64x64 and fp32: checks the script")
    ap.add_argument("--build", choices=("export", "compile"), default="export",
                    help="what the builders build: ONNX exports (no GPU) or torch.compile's code (the GPU visible)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = "fp32" if args.tiny or args.device == "cpu" else "fp16"
    cases = [{"name": "launch-bound", "batch": 1, "dtype": dtype, "backend": "torch-eager"},
             {"name": "GPU-bound", "batch": 8 if args.tiny else 64, "dtype": dtype,
              "backend": "torch-cudagraph" if args.device == "cuda" else "torch-eager"}]
    from workers.measure import affinity

    timing = affinity.timing_cpu(None)
    others = sorted(os.sched_getaffinity(0) - ({timing} if timing is not None else set()))
    n = args.builders if args.builders is not None else min(8, max(1, len(others)))
    t0 = time.time()
    procs = start_builders(n, others, args.tiny, args.build, args.device)
    results = {}
    try:
        switch(procs, False)
        for case in cases:
            trial = trial_of(case, args.device, args.tiny)
            results[case["name"]] = {**case, **time_case(trial, args.device, procs, args.rounds, args.round_s,
                                                         args.warmup_s, args.seed)}
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
    name = "cpu"
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
    (args.out / "guard.json").write_text(json.dumps({"device": name, "builders": n, "build": args.build,
                                                     "results": results}, indent=1))
    what = "ONNX exports, no GPU" if args.build == "export" else "torch.compile, the timed GPU visible"
    print(f"\n{name}  {time.strftime('%Y-%m-%d')}  {n} builders ({what}), {args.rounds} rounds of "
          f"{args.round_s} s a state, {time.time() - t0:.0f} s")
    print(f"{'case':14} {'backend':16} {'batch':>5} {'idle ms':>9} {'busy ms':>9} {'busy/idle':>9} "
          f"{'95% interval':>17} verdict")
    for r in results.values():
        print(f"{r['name']:14} {r['backend']:16} {r['batch']:>5} {np.median(r['idle_ms']):9.3f} "
              f"{np.median(r['busy_ms']):9.3f} {r['ratio']:9.4f} {r['low']:8.4f}-{r['high']:.4f} {r['verdict']}")


if __name__ == "__main__":
    main()
