"""Placement, parallel efficiency, interference (BENCHMARKS.md, "How do several GPUs of one host scale?").

    python3 bench/multigpu.py plans/multigpu.yaml OUT_DIR [--logical-gpus N]

The plan's trials with fixed work (``target_rel_ci: null``: each trial times ``iters`` and
``min_time_s``, not "until the CI is tight", so a noisy trial does not run 20 times longer in one run
than in the other), run through the embedded Ray (``run_plan``, the CLI's code path):

1. ``warm``: all GPUs; fills the per-node ONNX export cache so later runs time trials, not exports.
   Checks one worker per GPU: distinct CUDA_VISIBLE_DEVICES and GPU UUIDs, every row ok.
2. ``alone``: one GPU (``workers=1``): every trial measured with the other GPUs idle.
3. ``busy``: all GPUs again: every trial measured while the other GPUs run trials too.
4. The launch-bound trials (batch 1, torch-eager; 5 repeats each) on one GPU in a fresh worker,
   three times: ``quiet``, ``loaded`` (every other GPU running ResNet-50 batch 128 in a separate
   process) and ``quiet`` again: a neighbour's effect apart from what ran before on the same worker.

Speed-up = wall(alone) / wall(busy) (ideal: the number of GPUs), the same for the trials' span
(first trial's start to last trial's end: the run's start-up, which more GPUs can't shorten, left
out), and for the wall after what a run pays once however many GPUs it has ("once": until the last
worker is through its first trial's setup: Ray's start, the workers' start and their first model
build, which every worker does at the same time). Each run's timeline says where its wall went:
start-up, per-worker busy time (sum of trial durations), gaps between a worker's trials, and the
tail (workers idle while the last trials end).
Interference = per-trial median(busy) / median(alone), summarised per backend label, with
launch-bound trials (batch 1 eager) on their own. ``--logical-gpus N`` runs it on a CPU machine
with a ``sleep`` backend plan (``bench/multigpu_sleep.yaml``), to check the script itself (no
neighbour load there). Prints a short table last; writes ``multigpu.json`` (summary, and every
row's timing) to OUT_DIR.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ray
import yaml

from orchestrator.run.api import run_plan

ROW_KEYS = ("trial_id", "label", "backend", "batch_size", "dtype", "worker", "status", "duration_s", "setup_s",
            "warmup_s", "timed_s", "parity_s", "export_s", "latency_ms_median")


def launch_bound(r: dict) -> bool:
    return r["backend"] in ("torch-eager", "sleep") and r["batch_size"] == 1 and r["label"] == "torch-eager"


def timed_run(plan: str | Path, out: Path, workers: int | None):
    launched = dt.datetime.now(dt.timezone.utc)
    t = time.perf_counter()
    result = run_plan(plan, out=out, workers=workers)
    return result, time.perf_counter() - t, launched


def timeline(rows: list[dict], launched: dt.datetime, wall: float) -> dict:
    """Where a run's wall went: start-up, each worker's busy time and gaps, the tail."""
    spans = []
    for r in rows:
        start = r["started_at"]
        start = start if start.tzinfo else start.replace(tzinfo=dt.timezone.utc)
        s = (start - launched).total_seconds()
        spans.append((r["worker"], s, s + r["duration_s"], r))
    first, last = min(s for _, s, _, _ in spans), max(e for _, _, e, _ in spans)
    workers = {}
    for w, s, e, r in sorted(spans, key=lambda x: x[1]):
        info = workers.setdefault(w, {"trials": 0, "busy_s": 0.0, "first_s": s, "last_s": e, "prev": None,
                                      "first_setup_s": r.get("setup_s") or 0.0})
        r["_prev_label"] = info["prev"]
        r["_start_s"] = s
        info["trials"] += 1
        info["busy_s"] += e - s
        info["last_s"] = max(info["last_s"], e)
        info["prev"] = f'{r["label"]} b{r["batch_size"]} {r["dtype"]}'
    for info in workers.values():
        info["gaps_s"] = info["last_s"] - info["first_s"] - info["busy_s"]
        info["tail_idle_s"] = last - info["last_s"]
        del info["prev"]
    # paid once per run however many GPUs there are: Ray's and the workers' start, then each worker's
    # first model build (torchvision import, random init, BatchNorm calibration, first copy to the GPU)
    once = max(info["first_s"] + info["first_setup_s"] for info in workers.values())
    return {"wall_s": wall, "startup_s": first, "span_s": last - first, "after_last_trial_s": wall - last,
            "once_s": once, "workers": workers}


def fixed_work(plan: str, out: Path) -> Path:
    """The plan with a fixed amount of timed work per trial (no "until the CI is tight")."""
    doc = yaml.safe_load(Path(plan).read_text())
    doc.setdefault("measure", {})["target_rel_ci"] = None
    path = out / "fixed_work.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


NEIGHBOUR = """
import torch, torchvision
m = torchvision.models.resnet50(weights=None).cuda().half().eval()
x = torch.randn(128, 3, 224, 224, device="cuda", dtype=torch.half)
print("neighbour: busy", flush=True)
with torch.inference_mode():
    while True:
        m(x); torch.cuda.synchronize()
"""


def neighbour(gpus: set[str]) -> subprocess.Popen:
    """A process keeping ``gpus`` busy with GPU-bound work until terminated."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(sorted(gpus)))
    p = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env, stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "neighbour: busy":
        raise RuntimeError("the neighbour load did not start")
    return p


def subset(plan: Path, out: Path) -> Path:
    """The plan with only its launch-bound trials (batch 1, the torch-eager label), 5 repeats each."""
    doc = yaml.safe_load(Path(plan).read_text())
    doc["measure"]["repeats"] = 5
    m = doc["matrix"]
    m["batch_sizes"] = [1]
    label = lambda b: b if isinstance(b, str) else b.get("label", b["backend"])  # noqa: E731
    m["backends"] = [b for b in m["backends"] if label(b) == "torch-eager"]
    doc.pop("exclude", None)
    path = out / "launch_bound.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


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

    runs = {}
    plan = fixed_work(args.plan, args.out)
    for name, workers in (("warm", None), ("alone", 1), ("busy", None)):
        result, wall, launched = timed_run(plan, args.out / name, workers)
        runs[name] = (result, timeline(result.rows, launched, wall))
    launch_plan = subset(plan, args.out)
    all_gpus = {r["cuda_visible_devices"] for r in runs["warm"][0].rows}
    launch_runs = {}
    for name in ("quiet", "loaded", "quiet again"):
        load = None
        if name == "loaded" and not args.logical_gpus:
            mine = {r["cuda_visible_devices"] for r in launch_runs["quiet"].rows}
            load = neighbour(all_gpus - mine) if all_gpus - mine else None
        try:
            launch_runs[name] = timed_run(launch_plan, args.out / name.replace(" ", "_"), 1)[0]
        finally:
            if load is not None:
                load.terminate()
                load.wait()
    warm = runs["warm"][0]
    per_worker = {}
    for r in warm.rows:
        per_worker.setdefault(r["worker"], set()).add((r["cuda_visible_devices"], r.get("gpu_uuid")))
    visible = {v for pairs in per_worker.values() for v, _ in pairs}
    uuids = {u for pairs in per_worker.values() for _, u in pairs}
    not_ok = [(n, r["label"], r["batch_size"], r["dtype"], r.get("error"))
              for n, res in [(n, res) for n, (res, _) in runs.items()] + list(launch_runs.items())
              for r in res.rows if r["status"] != "ok"]

    by = {n: {r["trial_id"]: r for r in res.rows if r["status"] == "ok"} for n, (res, _) in runs.items()}
    ratios: dict[str, list[float]] = {}
    for tid, r in by["busy"].items():
        base = by["alone"].get(tid)
        if base is None:
            continue
        key = r["label"] + (" (batch 1, launch-bound)" if launch_bound(r) else "")
        ratios.setdefault(key, []).append(r["latency_ms_median"] / base["latency_ms_median"])
    launch = []
    for name, res in launch_runs.items():
        for r in res.rows:
            if r["status"] == "ok":
                launch.append({"run": name, "trial": f'{r["label"]} b{r["batch_size"]} {r["dtype"]}',
                               "gpu": r["cuda_visible_devices"], "median_ms": r["latency_ms_median"],
                               "repeat_medians_ms": list(r.get("repeat_medians_ms") or [])})
    before = [{"trial": f'{r["label"]} b{r["batch_size"]} {r["dtype"]}',
               **{n: by[n][tid]["latency_ms_median"] for n in ("alone", "busy")},
               **{f"{n}_after": by[n][tid].get("_prev_label") for n in ("alone", "busy")}}
              for tid, r in by["alone"].items() if launch_bound(r) and tid in by["busy"]]
    tl = {n: t for n, (_, t) in runs.items()}
    speedup_wall = tl["alone"]["wall_s"] / tl["busy"]["wall_s"]
    speedup_span = tl["alone"]["span_s"] / tl["busy"]["span_s"]
    speedup_rest = (tl["alone"]["wall_s"] - tl["alone"]["once_s"]) / (tl["busy"]["wall_s"] - tl["busy"]["once_s"])
    summary = {
        "gpus": gpus, "workers": warm.workers, "cuda_visible_devices": sorted(visible), "gpu_uuids": sorted(uuids),
        "rows": len(warm.rows), "not_ok": not_ok, "timelines": tl,
        "speedup_wall": speedup_wall, "speedup_span": speedup_span, "speedup_after_once": speedup_rest,
        "interference_median_ratio": {k: statistics.median(v) for k, v in sorted(ratios.items())},
        "interference_max_ratio": {k: max(v) for k, v in sorted(ratios.items())},
        "launch_bound": launch, "launch_bound_in_runs": before,
        "rows_by_run": {n: [{k: r.get(k) for k in ROW_KEYS} | {"start_s": r.get("_start_s"),
                                                                 "after": r.get("_prev_label")}
                            for r in res.rows] for n, (res, _) in runs.items()},
    }
    (args.out / "multigpu.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"GPUs {gpus}; workers {len(warm.workers)}; distinct CUDA_VISIBLE_DEVICES {len(visible)}; "
          f"distinct GPU UUIDs {len(uuids)}; rows {len(warm.rows)}; not ok {len(not_ok)}")
    print(f"{'run':6s} {'wall s':>7s} {'start-up':>9s} {'once':>6s} {'span':>7s} {'after':>6s}  "
          "per worker: trials busy gaps tail-idle")
    for n, t in tl.items():
        ws = "; ".join(f'{v["trials"]} {v["busy_s"]:.1f} {v["gaps_s"]:.1f} {v["tail_idle_s"]:.1f}'
                       for v in t["workers"].values())
        print(f'{n:6s} {t["wall_s"]:7.1f} {t["startup_s"]:9.1f} {t["once_s"]:6.1f} {t["span_s"]:7.1f} '
              f'{t["after_last_trial_s"]:6.1f}  {ws}')
    print(f"speed-up 1 -> {gpus} GPUs: wall {speedup_wall:.2f}x, trials' span {speedup_span:.2f}x, "
          f"wall after the once-per-run costs {speedup_rest:.2f}x (ideal {gpus}x)")
    print(f"{'label':45s} {'busy/alone median':>18s} {'max':>8s}")
    for k in sorted(ratios):
        print(f"{k:45s} {statistics.median(ratios[k]):18.3f} {max(ratios[k]):8.3f}")
    print("launch-bound trials in the runs above, median ms (after: what ran before on its worker):")
    for x in before:
        print(f'  {x["trial"]}: alone {x["alone"]:.3f} (after {x["alone_after"]}), '
              f'busy {x["busy"]:.3f} (after {x["busy_after"]})')
    print("launch-bound trials, fresh worker on one GPU, 5 repeats: median ms [repeat medians]")
    for x in launch:
        reps = " ".join(f"{v:.3f}" for v in x["repeat_medians_ms"])
        print(f'  {x["run"]:12s} {x["trial"]:22s} GPU {x["gpu"]}: {x["median_ms"]:.3f} [{reps}]')
    ray.shutdown()
    return 0 if not not_ok else 1


if __name__ == "__main__":
    sys.exit(main())
