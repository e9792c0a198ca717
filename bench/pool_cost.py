"""What the input pool and the repeat check cost (BENCHMARKS.md, "The input pool and the repeat check").

One torch-eager trial of a tiny CNN (batch 2, 3x16x16) with a fixed warm-up and 200 timed iterations,
five times each: one input, a pool of 4, and a pool of 4 with ``repeat_check``. Prints the medians
of the trial's seconds (``duration_s``), its timed seconds and its median latency, and the repeat
check's speedups (about 1 for an honest backend). Runs on a CPU or a GPU (``--device cuda``).

    PYTHONPATH=$PWD python bench/pool_cost.py [--device cuda] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # tests/tinynet.py: the tiny CNN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import parse_plan
    from workers.models.build import ModelStore
    from workers.trial import run_trial

    store = ModelStore()
    for pool, check in ((1, False), (4, False), (4, True)):
        measure = {"warmup_iters": 10, "warmup_max_iters": 10, "iters": 200, "max_iters": 200,
                   "target_rel_ci": None, "max_time_s": 30, "input_pool": pool, "repeat_check": check}
        plan = {"name": "pool-cost", "device": args.device,
                "models": [{"python": "tinynet:make", "input_shape": [3, 16, 16]}],
                "matrix": {"batch_sizes": [2], "backends": ["torch-eager"]}, "measure": measure}
        (trial,) = expand(parse_plan(plan))
        rows = [run_trial(trial, args.device, store, cpus=1) for _ in range(args.runs)]
        bad = [r.get("error") for r in rows if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"pool {pool}: {bad[0]}")
        med = {k: statistics.median(r[k] for r in rows) for k in ("duration_s", "timed_s", "latency_ms_median")}
        speedups = [round(r["repeat_speedup"], 3) for r in rows if r.get("repeat_speedup")]
        print(f"input_pool {pool} repeat_check {str(check):5}: trial {med['duration_s']:.3f} s, timed "
              f"{med['timed_s']:.3f} s, median {med['latency_ms_median']:.4f} ms"
              + (f", repeat speedups {speedups}" if speedups else ""))


if __name__ == "__main__":
    main()
