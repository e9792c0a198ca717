"""What a compile cache filled ahead takes off a worker (BENCHMARKS.md, "Where a sweep's worker-time goes").

    python3 bench/compile_split.py --out $OUT/compile                  # GPU: ResNet-50 fp16, batch 1 and 256
    python3 bench/compile_split.py --out /tmp/compile --device cpu --tiny   # checks the script on a CPU

For each batch size the trial (``torch-compile``, ``mode: reduce-overhead``, channels_last: the
plans' ``torch-compile-cl``) is set up by the product's runner in a fresh process, as a worker sets it
up, twice against one Inductor cache directory (``INFER_ORCH_CACHE``):

- cold: the cache empty, as on a node's first trial of this model and shape;
- warm: the cache the cold run filled, as a worker would find it had something compiled this model and
  shape ahead. Cold minus warm is what building ahead could hide; warm is what stays per trial.

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


def child(device: str, batch: int, tiny: bool) -> dict:
    """One set-up of the trial in this process: its times, Dynamo's phases, the GPU's utilisation."""
    import torch
    import torch._dynamo.utils as dynamo_utils

    from bench.ahead_guard import trial_of
    from workers.backends import get
    from workers.context import TrialContext
    from workers.measure.envinfo import device_facts
    from workers.models.build import ModelStore

    options = {"mode": "default" if device == "cpu" else "reduce-overhead", "channels_last": True}
    case = {"batch": batch, "dtype": "fp32" if device == "cpu" else "fp16",
            "backend": {"backend": "torch-compile", "options": options}}
    trial = trial_of(case, device, tiny)
    cls = get(trial.backend)
    runner = cls(TrialContext(trial=trial, device=device, store=ModelStore()), cls.Options(**trial.options))
    facts = device_facts(device)
    util: list[int] = []
    stop = threading.Event()
    if device == "cuda":
        threading.Thread(target=gpu_busy, args=(facts["gpu_uuid"], stop, util), daemon=True).start()
    t0 = time.perf_counter()
    runner.setup()
    setup_s = time.perf_counter() - t0
    stop.set()
    spent = dynamo_utils.calculate_time_spent()
    res = {"device_name": facts["device_name"], "torch": torch.__version__, "batch": batch, "setup_s": setup_s,
           "compile_time_s": runner.compile_time_s,
           "cache_warm": runner.cache_warm, "phases_s": {k: spent.get(k) for k in PHASES},
           "gpu_util_pct_mean": sum(util) / len(util) if util else None, "gpu_util_samples": len(util)}
    runner.teardown()
    return res


def run_child(args: argparse.Namespace, batch: int, cache: Path) -> dict:
    env = {**os.environ, "INFER_ORCH_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--child", str(batch), "--device", args.device, *(["--tiny"] if args.tiny else [])]
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
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.device, args.child, args.tiny)))
        return
    if args.out is None:
        ap.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        cache = Path(tempfile.mkdtemp(prefix="compile-split-"))
        cold = run_child(args, batch, cache)
        warm = run_child(args, batch, cache)
        results.append({"batch": batch, "cold": cold, "warm": warm})
    first = results[0]["cold"]  # the children's facts: this process imports neither torch nor CUDA
    (args.out / "compile.json").write_text(json.dumps({"device": first["device_name"], "results": results}, indent=2))
    print(f"\n{first['device_name']}  {time.strftime('%Y-%m-%d')}  torch {first['torch']}")
    print(f"{'batch':>5} {'cache':5} {'setup s':>8} {'compile s':>9} {'inductor s':>10} {'kernel wait s':>13} "
          f"{'GPU busy %':>10} {'FX cache':>8}")
    for r in results:
        for name in ("cold", "warm"):
            x = r[name]
            ph, util = x["phases_s"], x["gpu_util_pct_mean"]
            print(f"{r['batch']:>5} {name:5} {x['setup_s']:8.2f} {x['compile_time_s']:9.2f} "
                  f"{ph.get('inductor_compile') or 0:10.2f} {ph.get('async_compile.wait') or 0:13.2f} "
                  f"{'-' if util is None else f'{util:.1f}':>10} {str(x['cache_warm']):>8}")


if __name__ == "__main__":
    main()
