"""What a compile cache filled ahead takes off a worker (BENCHMARKS.md, "Where a sweep's worker-time goes").

    python3 bench/compile_split.py --out $OUT/compile                  # GPU: ResNet-50 fp16, batch 1 and 256
    python3 bench/compile_split.py --out /tmp/compile --device cpu --tiny   # checks the script on a CPU

For each batch size the trial (``torch-compile``, ``mode: reduce-overhead``, channels_last: the
plans' ``torch-compile-cl``) is set up by the product's runner in a fresh process, as a worker sets it
up, twice against one Inductor cache directory (``INFER_ORCH_CACHE``):

- cold: the cache empty, as on a node's first trial of this model and shape;
- warm: the cache the cold run filled, as a worker would find it had something compiled this model and
  shape ahead. Cold minus warm is what building ahead could hide; warm is what stays per trial;
- ahead: a fresh cache filled by the build-ahead task's compile (``workers.backends.compile_ahead``:
  the model traced on fake tensors, Inductor's code generated, nothing run) in a process of its own
  (its build time, its GPU memory as NVML counts it, the GPU's utilisation meanwhile), then the
  trial set up by a worker process: what building ahead really leaves per trial.

Each run reports its setup and compile time (``compile_time_s``), Dynamo's phases
(``torch._dynamo.utils.calculate_time_spent``: graph capture, AOT autograd, Inductor's lowering and
code generation, the wait on Triton's kernel compiles) and, on a GPU, how busy the GPU was while it
compiled (NVML utilisation every 50 ms): what a builder compiling on the trial's own GPU would take
from a trial timed there. Writes ``OUT/compile.json`` and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

PHASES = ("entire_frame_compile", "backend_compile", "inductor_compile", "code_gen", "async_compile.wait")


def gpu_busy(uuid: str | None, stop: threading.Event, out: list[int]) -> None:
    """NVML utilisation of GPU ``uuid`` every 50 ms until ``stop``."""
    from workers.measure.envinfo import gpu_utilization

    while not stop.wait(0.05):
        if (u := gpu_utilization(uuid)) is not None:
            out.append(u)


def compile_trial(device: str, batch: int, tiny: bool):
    """The plans' ``torch-compile-cl`` trial (``reduce-overhead`` on a GPU, fp16; default on a CPU, fp32)."""
    from bench.ahead_guard import trial_of

    options = {"mode": "default" if device == "cpu" else "reduce-overhead", "channels_last": True}
    case = {"batch": batch, "dtype": "fp32" if device == "cpu" else "fp16",
            "backend": {"backend": "torch-compile", "options": options}}
    return trial_of(case, device, tiny)


def watched(device: str, facts: dict, work: Any) -> tuple[Any, float, dict]:
    """``work()``'s result, its seconds, and the GPU's utilisation meanwhile (NVML every 50 ms, on a GPU)."""
    util: list[int] = []
    stop = threading.Event()
    if device == "cuda":
        threading.Thread(target=gpu_busy, args=(facts["gpu_uuid"], stop, util), daemon=True).start()
    t0 = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - t0
    stop.set()
    return result, seconds, {"gpu_util_pct_mean": sum(util) / len(util) if util else None,
                             "gpu_util_samples": len(util)}


def child(device: str, batch: int, tiny: bool) -> dict:
    """One set-up of the trial in this process: its times, Dynamo's phases, the GPU's utilisation."""
    import torch
    import torch._dynamo.utils as dynamo_utils

    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure.envinfo import device_facts
    from workers.models.build import ModelStore

    trial = compile_trial(device, batch, tiny)
    cls = get(trial.backend)
    runner = cls(TrialContext(trial=trial, device=device, store=ModelStore()), cls.Options(**trial.options))
    facts = device_facts(device)
    _, setup_s, util = watched(device, facts, runner.setup)
    spent = dynamo_utils.calculate_time_spent()
    res = {"device_name": facts["device_name"], "torch": torch.__version__, "batch": batch, "setup_s": setup_s,
           "compile_time_s": runner.compile_time_s,
           "cache_warm": runner.cache_warm, "phases_s": {k: spent.get(k) for k in PHASES}, **util}
    runner.teardown()
    return res


def builder(device: str, batch: int, tiny: bool) -> dict:
    """The build-ahead task's compile of the trial in this process: its time, the GPU's utilisation
    meanwhile, and this process's GPU memory after it (NVML: the CUDA context and kernels it loaded)."""
    import torch

    from workers.backends import compile_ahead
    from workers.measure.envinfo import device_facts
    from workers.measure.memory import process_gpu_memory
    from workers.models.build import ModelStore

    trial = compile_trial(device, batch, tiny)
    facts = device_facts(device)
    built, build_s, util = watched(device, facts, lambda: compile_ahead.build(trial, ModelStore()))
    mem, why = process_gpu_memory(facts["gpu_uuid"]) if device == "cuda" else (None, "cpu")
    allocated = torch.cuda.memory_allocated() if device == "cuda" else 0
    return {"device_name": facts["device_name"], "torch": torch.__version__, "batch": batch, "build_s": build_s,
            "facts": json.loads(built.path.read_text()), "gpu_mem_bytes": mem, "gpu_mem_why_not": why,
            "torch_allocated_bytes": allocated, **util}


def run_child(args: argparse.Namespace, batch: int, cache: Path, build: bool = False) -> dict:
    env = {**os.environ, "INFER_ORCH_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if build:  # as a build-ahead task runs: one compile thread, for workers of this process's torch threads
        import torch

        env.update(TORCHINDUCTOR_COMPILE_THREADS="1", OMP_NUM_THREADS="1",
                   INFER_ORCH_WORKER_THREADS=str(torch.get_num_threads()))
    cmd = [sys.executable, __file__, "--child", str(batch), "--device", args.device, *(["--tiny"] if args.tiny else []),
           *(["--build"] if build else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the compile of batch {batch} failed:\n{proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-sizes", default="1,256")
    ap.add_argument("--tiny", action="store_true", help="ResNet-18 at 64x64: checks the script")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps((builder if args.build else child)(args.device, args.child, args.tiny)))
        return
    if args.out is None:
        ap.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        cache = Path(tempfile.mkdtemp(prefix="compile-split-"))
        cold = run_child(args, batch, cache)
        warm = run_child(args, batch, cache)
        fresh = Path(tempfile.mkdtemp(prefix="compile-ahead-"))
        build = run_child(args, batch, fresh, build=True)
        ahead = run_child(args, batch, fresh)
        results.append({"batch": batch, "cold": cold, "warm": warm, "build": build, "ahead": ahead})
    first = results[0]["cold"]  # the children's facts: this process imports neither torch nor CUDA
    (args.out / "compile.json").write_text(json.dumps({"device": first["device_name"], "results": results}, indent=2))
    print(f"\n{first['device_name']}  {time.strftime('%Y-%m-%d')}  torch {first['torch']}")
    print(f"{'batch':>5} {'cache':5} {'setup s':>8} {'compile s':>9} {'inductor s':>10} {'kernel wait s':>13} "
          f"{'GPU busy %':>10} {'FX cache':>8}")
    for r in results:
        for name in ("cold", "warm", "ahead"):
            x = r[name]
            ph, util = x["phases_s"], x["gpu_util_pct_mean"]
            print(f"{r['batch']:>5} {name:5} {x['setup_s']:8.2f} {x['compile_time_s']:9.2f} "
                  f"{ph.get('inductor_compile') or 0:10.2f} {ph.get('async_compile.wait') or 0:13.2f} "
                  f"{'-' if util is None else f'{util:.1f}':>10} {str(x['cache_warm']):>8}")

    print(f"\n{'batch':>5} {'build-ahead s':>13} {'GPU busy %':>10} {'builder GPU MiB':>15} {'torch alloc':>11} "
          f"{'graphs':>6}")
    for r in results:
        b = r["build"]
        mem = "-" if b["gpu_mem_bytes"] is None else f"{b['gpu_mem_bytes'] / 2**20:.0f}"
        util = "-" if b["gpu_util_pct_mean"] is None else f"{b['gpu_util_pct_mean']:.1f}"
        print(f"{r['batch']:>5} {b['build_s']:13.2f} {util:>10} {mem:>15} {b['torch_allocated_bytes']:>11} "
              f"{b['facts']['graphs']:>6}")


if __name__ == "__main__":
    main()
