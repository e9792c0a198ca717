"""Scheduling efficiency: how close `infer-orch run` gets to the ideal on many short trials.

Runs N trials of the model-less ``sleep`` backend (each trial sleeps a fixed time, no device
work) over G logical GPUs, on a local embedded Ray and/or on a two-node ``ray start`` cluster on
this machine (G/2 GPUs per node, driven by the CLI with ``--address``), and prints per run:

    ideal     sum of the trials' nominal times / G: a scheduler with no overhead at all
    wall      from launching ``infer-orch run`` to its exit
    startup   from launching ``infer-orch run`` to the first trial starting (Python, Ray, actors)
    span      from the first trial's start to the last trial's end (the scheduling phase)
    shutdown  from the last trial's end to the exit (summary, killing workers, stopping Ray)
    ratio     wall / ideal; (wall - startup) / ideal; span / ideal, the scheduling phase alone
    per-trial overhead   (span - ideal) / (N / G): what each trial costs beyond its sleep, workers
              that became ready late included
    gap       on one worker, from a trial's end to the next one's start (median, p90): the
              scheduler's own cost per trial (row back to the driver, next trial out)

Goals: wall <= 1.10 x ideal + startup for 1 s trials; startup <= 10 s on a local embedded Ray.

    python bench/sched_bench.py [--mode embedded cluster] [--trial-s 1 0.1] [--trials 400] [--gpus 8] [OUT]

OUT (default $OUT or ./sched-bench) receives the plans, each run's Parquet results and
results.json; a short table is printed last. Needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# The trial count is batch_sizes x dtypes x io; 100 x 2 x 2 = 400.
PLAN = """\
name: sched-{tag}
device: cuda
models: [torchvision:resnet18]
matrix:
  batch_sizes: {batches}
  dtypes: [fp32, fp16]
  io: [device, host]
  backends:
    - backend: sleep
      options: {{step_s: {step}}}
measure: {{warmup_iters: 0, warmup_max_iters: 0, iters: 10, target_rel_ci: null}}
"""

# An embedded Ray that declares logical GPUs, then the CLI as users run it (it reuses that Ray).
EMBEDDED = """\
import sys, ray
ray.init(num_cpus={cpus}, num_gpus={gpus}, include_dashboard=False, log_to_driver=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {path!r}}}}})
from orchestrator.cli import main
sys.argv = ["infer-orch", "run", {plan!r}, "--out", {out!r}]
main()
"""


def write_plan(out: Path, trials: int, trial_s: float) -> tuple[Path, int]:
    per = 4  # dtypes x io
    batches = list(range(1, trials // per + 1))
    plan = out / f"plan-{trial_s:g}s.yaml"
    plan.write_text(PLAN.format(tag=f"{trial_s:g}s", batches=batches, step=trial_s / 10))
    return plan, len(batches) * per


def run_cli(cmd: list[str], env: dict[str, str], run_out: Path) -> dict:
    t0 = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    t1 = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"infer-orch failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    df = pd.read_parquet(run_out)
    starts = df.started_at.map(lambda t: t.timestamp())
    last_end = float((starts + df.duration_s).max())
    return {"wall_s": t1 - t0, "startup_s": float(starts.min() - t0), "trials_span_s": last_end - starts.min(),
            "shutdown_s": t1 - last_end, "rows": len(df),
            "sum_trial_s": float(df.duration_s.sum()), "nodes": int(df.node_id.nunique()), **gaps(df),
            "workers": int(df.worker.nunique()), "statuses": df.status.value_counts().to_dict()}


def gaps(df: pd.DataFrame) -> dict:
    """Idle time of each worker between its trials: median and 90th percentile, ms."""
    d = df.assign(start=df.started_at.map(lambda t: t.timestamp()))
    d = d.assign(end=d.start + d.duration_s).sort_values(["worker", "start"])
    gap = (d.start - d.groupby("worker").end.shift()).dropna() * 1000
    return {"gap_ms_median": float(gap.median()), "gap_ms_p90": float(gap.quantile(0.9))}


def bench(mode: str, trial_s: float, trials: int, gpus: int, out: Path, cluster=None) -> dict:
    plan, n = write_plan(out, trials, trial_s)
    run_out = out / f"{mode}-{trial_s:g}s"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if mode == "embedded":
        code = EMBEDDED.format(cpus=gpus, gpus=gpus, path=str(REPO), plan=str(plan), out=str(run_out))
        cmd = [sys.executable, "-c", code]
    else:
        env = {**cluster.env, "PYTHONPATH": env["PYTHONPATH"]}
        cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(run_out),
               "--address", cluster.address]
    r = run_cli(cmd, env, run_out)
    ideal = n * trial_s / gpus
    r.update(mode=mode, trial_s=trial_s, trials=n, gpus=gpus, ideal_s=ideal,
             ratio=r["wall_s"] / ideal, sched_ratio=(r["wall_s"] - r["startup_s"]) / ideal,
             span_ratio=r["trials_span_s"] / ideal,
             overhead_ms=(r["trials_span_s"] - ideal) / (n / gpus) * 1000,
             goal_met=bool(r["wall_s"] <= 1.10 * ideal + r["startup_s"]) if trial_s >= 1 else None)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=os.environ.get("OUT", "sched-bench"))
    ap.add_argument("--mode", nargs="+", choices=["embedded", "cluster"], default=["embedded", "cluster"])
    ap.add_argument("--trial-s", nargs="+", type=float, default=[1.0, 0.1])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for mode in args.mode:
        cluster = None
        if mode == "cluster":
            from raycluster import RayCluster

            cluster = RayCluster()
        try:
            if cluster:
                half = args.gpus // 2
                cluster.add_node("h", num_cpus=half, num_gpus=half, resources={"accelerator_type:T4": 1})
                cluster.add_node("w", num_cpus=args.gpus - half, num_gpus=args.gpus - half,
                                 resources={"accelerator_type:T4": 1})
            for trial_s in args.trial_s:
                r = bench(mode, trial_s, args.trials, args.gpus, out, cluster)
                results.append(r)
                print(json.dumps(r), flush=True)
        finally:
            if cluster:
                cluster.stop()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_avg_1m": os.getloadavg()[0], "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    (out / "results.json").write_text(json.dumps({"machine": machine, "runs": results}, indent=2, default=str))
    print(f"\nmachine: {machine}")
    hdr = f"{'mode':9} {'trial':>6} {'N':>4} {'GPUs':>4} {'ideal s':>8} {'wall s':>8} {'startup s':>9} " \
          f"{'span s':>7} {'shutdown s':>10} {'wall/ideal':>10} {'(wall-start)/ideal':>18} {'span/ideal':>10} " \
          f"{'overhead ms/trial':>17} {'gap ms p50/p90':>14} {'nodes':>5} {'goal':>5}"
    print(hdr)
    for r in results:
        goal = "-" if r["goal_met"] is None else ("yes" if r["goal_met"] else "NO")
        print(f"{r['mode']:9} {r['trial_s']:>5g}s {r['trials']:>4} {r['gpus']:>4} {r['ideal_s']:>8.1f} "
              f"{r['wall_s']:>8.1f} {r['startup_s']:>9.1f} {r['trials_span_s']:>7.1f} {r['shutdown_s']:>10.1f} "
              f"{r['ratio']:>10.3f} {r['sched_ratio']:>18.3f} {r['span_ratio']:>10.3f} "
              f"{r['overhead_ms']:>17.1f} {r['gap_ms_median']:>6.1f}/{r['gap_ms_p90']:<7.1f} {r['nodes']:>5} {goal:>5}")


if __name__ == "__main__":
    main()
