"""infer-orch across the GPUs of one host: placement, parallel efficiency, interference.

    python3 bench/multigpu.py plans/multigpu.yaml OUT_DIR [--logical-gpus N]

Three runs of the same plan through the embedded Ray (``run_plan``, the CLI's code path):

1. ``warm``: all GPUs; fills the per-node ONNX export cache so later runs time trials, not exports.
   Checks one worker per GPU: distinct CUDA_VISIBLE_DEVICES and GPU UUIDs, every row ok.
2. ``alone``: one GPU (``workers=1``): every trial measured with the other GPUs idle.
3. ``busy``: all GPUs again: every trial measured while the other GPUs run trials too.

Parallel efficiency = wall(alone) / (wall(busy) x GPUs) (ideal 1.0). Interference = per-trial
median(busy) / median(alone), summarised per backend label, with launch-bound trials (batch 1
eager) reported on their own. ``--logical-gpus N`` runs it on a CPU machine with a ``sleep``
backend plan (``bench/multigpu_sleep.yaml``), to check the script itself. Prints a short table
last; writes JSON to OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import ray

from orchestrator.run import run_plan


def timed_run(plan: str, out: Path, workers: int | None):
    t = time.perf_counter()
    result = run_plan(plan, out=out, workers=workers)
    return result, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plan")
    ap.add_argument("out", type=Path)
    ap.add_argument("--logical-gpus", type=int, default=None)
    args = ap.parse_args()
    env = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    kwargs = {"num_gpus": args.logical_gpus} if args.logical_gpus else {}
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}, **kwargs)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    args.out.mkdir(parents=True, exist_ok=True)

    warm, wall_warm = timed_run(args.plan, args.out / "warm", None)
    per_worker = {}
    for r in warm.rows:
        per_worker.setdefault(r["worker"], set()).add((r["cuda_visible_devices"], r.get("gpu_uuid")))
    visible = {v for pairs in per_worker.values() for v, _ in pairs}
    uuids = {u for pairs in per_worker.values() for _, u in pairs}
    not_ok = [(r["label"], r["batch_size"], r["dtype"], r.get("error")) for r in warm.rows if r["status"] != "ok"]

    alone, wall_alone = timed_run(args.plan, args.out / "alone", 1)
    busy, wall_busy = timed_run(args.plan, args.out / "busy", None)
    a = {r["trial_id"]: r for r in alone.rows if r["status"] == "ok"}
    ratios: dict[str, list[float]] = {}
    for r in busy.rows:
        base = a.get(r["trial_id"])
        if r["status"] != "ok" or base is None:
            continue
        launch_bound = r["backend"] == "torch-eager" and r["batch_size"] == 1
        key = r["label"] + (" (batch 1, launch-bound)" if launch_bound else "")
        ratios.setdefault(key, []).append(r["latency_ms_median"] / base["latency_ms_median"])

    efficiency = wall_alone / (wall_busy * gpus) if gpus else None
    summary = {
        "gpus": gpus, "workers": warm.workers, "cuda_visible_devices": sorted(visible), "gpu_uuids": sorted(uuids),
        "rows": len(warm.rows), "not_ok": not_ok,
        "wall_s": {"warm_all_gpus": wall_warm, "alone_1_gpu": wall_alone, "busy_all_gpus": wall_busy},
        "parallel_efficiency": efficiency,
        "interference_median_ratio": {k: statistics.median(v) for k, v in sorted(ratios.items())},
        "interference_max_ratio": {k: max(v) for k, v in sorted(ratios.items())},
    }
    (args.out / "multigpu.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"GPUs {gpus}; workers {len(warm.workers)}; distinct CUDA_VISIBLE_DEVICES {len(visible)}; "
          f"distinct GPU UUIDs {len(uuids)}; rows {len(warm.rows)}; not ok {len(not_ok)}")
    print(f"wall: warm {wall_warm:.1f} s, alone (1 GPU) {wall_alone:.1f} s, busy ({gpus} GPUs) {wall_busy:.1f} s; "
          f"speed-up {wall_alone / wall_busy:.2f}x of ideal {gpus}x; efficiency {efficiency:.2f}")
    print(f"{'label':45s} {'busy/alone median':>18s} {'max':>8s}")
    for k in sorted(ratios):
        print(f"{k:45s} {statistics.median(ratios[k]):18.3f} {max(ratios[k]):8.3f}")
    ray.shutdown()
    return 0 if not not_ok else 1


if __name__ == "__main__":
    sys.exit(main())
