"""Thousands of trials on a simulated cluster (BENCHMARKS.md, "How far does one driver scale? ...").

One script, sized by its arguments (BENCHMARKS.md has both runs):

    # 10,000 sleep trials of 1 s over 64 logical GPUs on 4 local Ray nodes
    python bench/scale.py OUT --trials 10000 --gpus 64 --nodes 4 --trial-s 1 --zero-length 2000
    # 500 sleep trials over 8 logical GPUs, 5% of them faults (abort, hang, raise, nan, oom, ...)
    python bench/scale.py OUT --trials 500 --gpus 8 --nodes 2 --trial-s 1 --faults 0.05

Starts N local ``ray start`` nodes with logical GPUs (as ``tests/raycluster.py`` does), runs
``infer-orch run --address`` on them as a user would (a subprocess whose memory and CPU time are
sampled), and checks and measures:

    ids        every trial id of the plan exactly once in the results
    statuses   the exact count of each status (sleep -> ok; each fault mode -> its status, FAULT_STATUS)
    span       first trial's start to the last one's end, against the ideal: the trials' nominal time
               (a hang counts its timeout_s) / GPUs. Goals: <= 1.10 x (no faults), wall <= 1.15 x ideal +
               start-up (faults)
    memory     the driver's RSS growth from its first stored row to its peak (compaction included):
               goals <= 300 MB (10,000 trials), <= 200 MB (500)
    driver     the driver's CPU time per trial over the run; with --zero-length N, a second run of N
               trials of no length on the same workers: the most trials/s this driver sustains here
    floor      with --ray-floor, before the run: one bare actor per logical GPU (no infer-orch code, placed
               as the run's workers are) started on the same cluster, and how long Ray takes to bring them
               all up: the part of the ramp below that is Ray's, not the driver's or the worker's
    budget     where the span goes, in worker-seconds over the ideal (bench/span_budget.py): the workers'
               ramp to their first trial, trials longer than nominal, the gaps between trials, the tail
    readers    pandas, polars, DuckDB and load_results reading the run; ``infer-orch report`` (terminal
               and HTML) on it; bytes per trial on disk, compacted and as parts

Everything goes under OUT (plans, runs, results.json); a short table is printed last. No GPU needed.
The fault modes and what each becomes are in FAULT_STATUS: a mode the installed fault backend lacks
is left out (and said).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

#: fault mode -> the status its trial ends with: extend here when the fault backend learns a mode (a
#: mode the installed backend lacks is left out). ``stale`` is being added on another branch: its
#: status here is an assumption to confirm when it lands.
FAULT_STATUS = {"abort": "failed", "hang": "timeout", "raise": "failed", "nan": "parity_failed", "oom": "oom",
                "stale": "parity_failed"}
DTYPES, IOS = ("fp32", "fp16"), ("device", "host")


def fault_modes(wanted: list[str] | None = None) -> list[str]:
    """The modes of FAULT_STATUS the installed fault backend knows (all of them unless ``wanted``)."""
    from typing import get_args

    from workers.backends.fault import FaultOptions

    known = set(get_args(FaultOptions.model_fields["mode"].annotation))
    return [m for m in (wanted or FAULT_STATUS) if m in known and m in FAULT_STATUS]


def make_plan(trials: int, trial_s: float, faults: float = 0.0, modes: list[str] | None = None,
              hang_timeout_s: float | None = None, name: str = "scale") -> tuple[str, dict[str, int], dict[str, Any]]:
    """A plan of exactly ``trials`` trials: sleep trials of ``trial_s`` (10 steps), and
    round(trials x faults) fault trials spread over ``modes`` (each with its own label).

    Returns (plan YAML, expected status counts, facts: sleep/fault counts, nominal busy seconds)."""
    modes = fault_modes(modes) if faults else []
    max_time_s = round(1.5 * trial_s + 0.5, 3)  # the 10 steps of a sleep trial and then some
    hang_timeout_s = hang_timeout_s or max_time_s + 2  # a timeout must leave room for the timing loop
    n_faults = round(trials * faults) if modes else 0
    per_mode = {m: n_faults // len(modes) + (i < n_faults % len(modes)) for i, m in enumerate(modes)}
    sleeps = trials - n_faults
    k = math.ceil(sleeps / 4)  # batch sizes 1..k x 2 dtypes x 2 io, less the last few
    assert k >= max(per_mode.values(), default=0), "too few trials for this many faults"
    combos = [(d, i) for d in DTYPES for i in IOS]
    spare = 4 * k - sleeps  # combinations of the last batch size left out
    exclude = [{"label": "sleep", "batch_size": k, "dtype": d, "io": i} for d, i in combos[len(combos) - spare:]] \
        if spare else []
    backends: list[dict[str, Any]] = []
    for j, (m, n) in enumerate(per_mode.items()):
        if not n:
            continue
        # spread over the run (trials go in batch-size order): not all replaced workers at once
        at = {min(k, 1 + int((i + (j + 1) / (len(per_mode) + 1)) * k / n)) for i in range(n)}
        assert len(at) == n, "too few trials for this many faults"
        entry: dict[str, Any] = {"backend": "fault", "label": f"fault-{m}", "options": {"mode": m}, "io": ["device"]}
        if m == "hang":
            entry["timeout_s"] = hang_timeout_s
        backends.append(entry)
        exclude.append({"label": f"fault-{m}", "dtype": "fp16"})
        if n < k:
            exclude.append({"label": f"fault-{m}", "batch_size": [b for b in range(1, k + 1) if b not in at]})
    backends.append({"backend": "sleep", "label": "sleep", "options": {"step_s": trial_s / 10}})
    plan = {"name": name, "device": "cuda", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": list(range(1, k + 1)), "dtypes": list(DTYPES), "io": list(IOS),
                       "backends": backends, **({"exclude": exclude} if exclude else {})},
            "measure": {"warmup_iters": 0, "warmup_max_iters": 0, "iters": 10, "target_rel_ci": None,
                        "max_time_s": max_time_s},
            "timeout_s": max(60, 20 * trial_s)}
    expected = Counter({"ok": sleeps})
    for m, n in per_mode.items():
        expected[FAULT_STATUS[m]] += n
    busy = sleeps * trial_s + per_mode.get("hang", 0) * hang_timeout_s
    return json.dumps(plan), dict(expected), {"sleep": sleeps, "faults": per_mode, "busy_s": busy}


def check(out: Path, plan_path: Path, expected: dict[str, int]) -> dict[str, Any]:
    """What the run in ``out`` stored, against the plan: ids once each, the status counts."""
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import load_plan
    from orchestrator.results.read import load_results

    t = load_results(out, columns=["trial_id", "status", "started_at", "duration_s", "worker", "node_id"])
    ids = t.column("trial_id").to_pylist()
    planned = {x.trial_id for x in expand(load_plan(plan_path))}
    counts = dict(Counter(t.column("status").to_pylist()))
    # a trial whose worker died or that timed out has no start of its own: the span is the others'
    timed = [(s.timestamp(), d) for s, d in zip(t.column("started_at").to_pylist(), t.column("duration_s").to_pylist(),
                                                strict=True) if s is not None and d is not None]
    starts = [s for s, _ in timed]
    ends = [s + d for s, d in timed]
    return {"rows": len(ids), "ids_once": len(ids) == len(set(ids)) and set(ids) == planned,
            "missing": len(planned - set(ids)), "duplicates": len(ids) - len(set(ids)),
            "counts": counts, "counts_ok": counts == expected, "expected": expected,
            "first_start": min(starts), "last_end": max(ends), "span_s": max(ends) - min(starts),
            "workers": len(set(t.column("worker").to_pylist())), "nodes": len(set(t.column("node_id").to_pylist()))}


class Sampler:
    """RSS and CPU time of a process (from /proc), every ``every`` seconds, from a thread."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        import threading

        self.pid = pid
        self.samples: list[tuple[float, int, float]] = []  # (time, rss bytes, cpu seconds)
        self._stop = threading.Event()
        self._every = every
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> tuple[int, float]:
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss, cpu = self._read()
            except (OSError, StopIteration, ValueError, IndexError):  # the process ended
                return
            self.samples.append((time.time(), rss, cpu))
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> tuple[float, int, float]:
        """The last sample at or before ``t`` (else the first)."""
        before = [s for s in self.samples if s[0] <= t]
        return before[-1] if before else self.samples[0]


def run_driver(plan: Path, out: Path, env: dict[str, str], address: str, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(plan), "--out", str(out), "--address", address,
           "--workers", str(workers), "--table", "summary"]
    log = open(out.parent / f"{out.name}.log", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid)
    first_row = None
    while proc.poll() is None:
        if first_row is None and out.is_dir() and any(out.glob("part-*.parquet")):
            first_row = time.time()
        time.sleep(0.2)
    t1 = time.time()
    sampler.stop()
    log.close()
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "t0": t0, "t1": t1, "first_row_seen": first_row,
            "sampler": sampler, "log_tail": (out.parent / f"{out.name}.log").read_text()[-1500:]}


#: A driver that starts one bare actor per logical GPU of the cluster (one GPU and the node's even CPU
#: share each, pinned to its node, as ``orchestrator.run.placement.start_workers`` places the run's), and
#: prints the seconds from creation to each one's first answer.
FLOOR_DRIVER = """
import json, os, sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from orchestrator.run.placement import _share
ray.init(address=sys.argv[1], logging_level="ERROR")
class Bare:
    def info(self):
        return os.getpid()
Bare = ray.remote(Bare)
nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
t0, calls = time.time(), {}
for n in nodes:
    gpus, cpus = int(n["Resources"]["GPU"]), n["Resources"].get("CPU", 0)
    for _ in range(gpus):
        a = Bare.options(num_gpus=1, num_cpus=_share(cpus, gpus), max_restarts=0,
                         scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        calls[a.info.remote()] = a
ready, left = [], list(calls)
while left:
    done, left = ray.wait(left, num_returns=1)
    ready.append(time.time() - t0)
for a in calls.values():
    ray.kill(a)
print("READY", json.dumps(ready), flush=True)
"""


def ray_floor(env: dict[str, str], address: str, trials: int, trial_s: float) -> dict[str, Any]:
    """Ray's own ramp on this cluster: bare actors, one per logical GPU, from creation to ready.

    ``ramp_worker_s`` is bench/span_budget.py's ramp for them (each actor's ready time after the
    first one's), also as a share of the run's ideal worker-seconds (``trials`` x ``trial_s``)."""
    done = subprocess.run([sys.executable, "-c", FLOOR_DRIVER, address], env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode:
        raise SystemExit(f"the bare-actor driver failed:\n{done.stderr[-2000:]}")
    # Ray's own warnings may share the driver's stdout: the answer is the line marked READY
    ready = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("READY "))[6:])
    ramp = sum(t - ready[0] for t in ready)
    return {"actors": len(ready), "first_ready_s": ready[0], "last_ready_s": ready[-1],
            "spread_s": ready[-1] - ready[0], "ramp_worker_s": ramp, "ramp_share": ramp / (trials * trial_s)}


def memory_and_cpu(d: dict[str, Any], first_start: float, last_end: float, trials: int) -> dict[str, Any]:
    s: Sampler = d["sampler"]
    base = s.at(d["first_row_seen"] or first_start)
    peak = max(rss for _, rss, _ in s.samples)
    end = s.at(last_end)
    return {"rss_first_row_mb": base[1] / 2**20, "rss_peak_mb": peak / 2**20,
            "rss_growth_mb": (peak - base[1]) / 2**20, "rss_end_of_trials_mb": end[1] / 2**20,
            "driver_cpu_s": end[2] - base[2],
            "driver_cpu_ms_per_trial": (end[2] - base[2]) / max(trials, 1) * 1e3,
            "driver_cpu_total_s": s.samples[-1][2]}


def readers(out: Path) -> dict[str, Any]:
    """Seconds each reader takes for the whole run (every column, samples included)."""
    times: dict[str, Any] = {}

    def timed(name: str, fn: Any) -> None:
        t = time.perf_counter()
        try:
            n = fn()
            times[name] = round(time.perf_counter() - t, 3)
            times[f"{name}_rows"] = n
        except Exception as exc:  # a missing reader is said, not fatal
            times[name] = f"{type(exc).__name__}: {exc}"[:200]

    import pandas as pd

    timed("pandas", lambda: len(pd.read_parquet(out)))
    try:
        import polars as pl

        timed("polars", lambda: pl.read_parquet(f"{out}/*.parquet").height)
    except ImportError:
        times["polars"] = "not installed"
    try:
        import duckdb

        timed("duckdb", lambda: len(duckdb.sql(f"select * from read_parquet('{out}/*.parquet')").fetchall()))
        timed("duckdb_groupby", lambda: len(duckdb.sql(
            f"select label, status, count(*), median(latency_ms_median) from read_parquet('{out}/*.parquet') "
            "group by all").fetchall()))
    except ImportError:
        times["duckdb"] = "not installed"
    from orchestrator.results.read import load_results

    timed("load_results", lambda: load_results(out).num_rows)
    return times


def report_times(out: Path, env: dict[str, str]) -> dict[str, Any]:
    res = {}
    for name, extra in (("report_terminal_s", []), ("report_html_s", ["--html", str(out.parent / "report.html")])):
        t = time.time()
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(out), "--baseline", "sleep",
                               *extra], cwd=REPO, env={**env, "COLUMNS": "200"}, capture_output=True, text=True)
        res[name] = round(time.time() - t, 2) if done.returncode == 0 else f"exit {done.returncode}: " \
                                                                           f"{done.stderr[-300:]}"
    return res


def part_bytes(out: Path, n: int = 50) -> float:
    """Mean size of a row written as a part file (the layout before compaction), from ``n`` stored rows."""
    import tempfile

    import pyarrow.parquet as pq

    from orchestrator.results.sink import stored_metadata

    meta = stored_metadata(out)
    env = meta.get("environment") or {}
    rows = pq.ParquetFile(out / "results.parquet").read_row_group(0).slice(0, n).to_pylist()
    from orchestrator.results.sink import ResultSink

    with tempfile.TemporaryDirectory() as d:
        sink = ResultSink(Path(d), "r", None, {"plan": meta.get("plan"), "device": "cuda"})
        for r in rows:  # one row a part, as a slow run writes them
            sink.write(r, environment={"driver": env.get("driver"),
                                       "worker": (env.get("workers") or {}).get(r["worker"])})
            sink.flush()
        sink.discard_stream()
        return sum(p.stat().st_size for p in Path(d).glob("part-*.parquet")) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--gpus", type=int, default=64, help="logical GPUs in all (one worker each)")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--trial-s", type=float, default=1.0)
    ap.add_argument("--faults", type=float, default=0.0, help="share of the trials that are faults (0.05)")
    ap.add_argument("--modes", nargs="*", default=None, help=f"fault modes (default: {' '.join(FAULT_STATUS)})")
    ap.add_argument("--hang-timeout-s", type=float, default=None, help="default: the timing cap + 2 s")
    ap.add_argument("--zero-length", type=int, default=0, help="also run this many trials of no length")
    ap.add_argument("--ray-floor", action="store_true",
                    help="first time bare actors (one per logical GPU) coming up on the same cluster: Ray's ramp")
    args = ap.parse_args()
    from raycluster import RayCluster

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    text, expected, facts = make_plan(args.trials, args.trial_s, args.faults, args.modes, args.hang_timeout_s)
    plan = out / "plan.yaml"
    plan.write_text(text)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    result: dict[str, Any] = {"args": vars(args) | {"out": str(out)}, "machine": machine, "plan": facts}
    cluster = RayCluster()
    try:
        t = time.time()
        per = [args.gpus // args.nodes + (i < args.gpus % args.nodes) for i in range(args.nodes)]
        for i, g in enumerate(per):
            cluster.add_node(f"n{i}", num_cpus=g, num_gpus=g, resources={"accelerator_type:T4": 1})
        result["cluster_start_s"] = round(time.time() - t, 1)
        print(f"cluster: {args.nodes} nodes, {args.gpus} logical GPUs, up in {result['cluster_start_s']} s",
              flush=True)
        env = {**cluster.env, "COLUMNS": "200"}
        if args.ray_floor:
            result["floor"] = ray_floor(env, cluster.address, args.trials, args.trial_s)
            print(json.dumps({"floor": result["floor"]}), flush=True)
            time.sleep(5)  # the bare actors' processes gone before the run's start
        run_out = out / "run"
        d = run_driver(plan, run_out, env, cluster.address, args.gpus)
        if d["rc"] not in (0, 1):
            raise SystemExit(f"driver failed (exit {d['rc']}):\n{d['log_tail']}")
        c = check(run_out, plan, expected)
        ideal = facts["busy_s"] / args.gpus
        startup = c["first_start"] - d["t0"]
        r = {"exit": d["rc"], **{k: v for k, v in c.items() if k not in ("first_start", "last_end")},
             "ideal_s": ideal, "wall_s": d["t1"] - d["t0"], "startup_s": startup,
             "after_trials_s": d["t1"] - c["last_end"], "span_ratio": c["span_s"] / ideal,
             "wall_ratio_less_startup": (d["t1"] - d["t0"] - startup) / ideal,
             **memory_and_cpu(d, c["first_start"], c["last_end"], c["rows"]), "cmd": d["cmd"]}
        from bench.span_budget import span_budget

        r["budget"] = span_budget(run_out, args.trial_s) if not args.faults else None
        r["goal_span"] = r["span_ratio"] <= 1.10
        r["goal_wall_faults"] = d["t1"] - d["t0"] <= 1.15 * ideal + startup
        r["goal_memory"] = r["rss_growth_mb"] <= (300 if args.trials > 1000 else 200)
        result["run"] = r
        print(json.dumps({k: v for k, v in r.items() if k != "cmd"}, default=str), flush=True)
        files = sorted(p.name for p in run_out.iterdir())
        size = (run_out / "results.parquet").stat().st_size if (run_out / "results.parquet").is_file() else None
        result["files"] = {"compacted": files.count("results.parquet") == 1,
                           "parts_left": sum(f.startswith("part-") for f in files),
                           "compacted_bytes": size, "bytes_per_trial_compacted": size / c["rows"] if size else None,
                           "bytes_per_trial_as_parts": part_bytes(run_out) if size else None}
        result["readers_s"] = readers(run_out)
        result["report"] = report_times(run_out, env)
        print(json.dumps({"files": result["files"], "readers_s": result["readers_s"], "report": result["report"]}),
              flush=True)
        if args.zero_length:
            ztext, zexp, zfacts = make_plan(args.zero_length, 0.0, name="zero")
            zplan = out / "zero.yaml"
            zplan.write_text(ztext)
            zout = out / "zero"
            z = run_driver(zplan, zout, env, cluster.address, args.gpus)
            zc = check(zout, zplan, zexp)
            zm = memory_and_cpu(z, zc["first_start"], zc["last_end"], zc["rows"])
            result["zero"] = {"trials": zc["rows"], "ids_once": zc["ids_once"], "counts": zc["counts"],
                              "span_s": zc["span_s"], "trials_per_s": zc["rows"] / zc["span_s"],
                              "driver_cpu_ms_per_trial": zm["driver_cpu_ms_per_trial"],
                              "driver_busy_share": zm["driver_cpu_s"] / zc["span_s"],
                              "wall_s": z["t1"] - z["t0"], "rss_growth_mb": zm["rss_growth_mb"]}
            print(json.dumps(result["zero"]), flush=True)
    finally:
        cluster.stop()
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    summary(result)


def summary(res: dict[str, Any]) -> None:
    from bench.span_budget import describe as describe_budget

    r, f, rd = res["run"], res["files"], res["readers_s"]
    a = res["args"]
    print(f"\nmachine: {res['machine']}")
    print(f"{a['trials']} trials ({res['plan']['sleep']} sleep of {a['trial_s']:g} s, faults {res['plan']['faults']}) "
          f"on {a['gpus']} logical GPUs over {a['nodes']} nodes")
    lines = [
        ("every trial id exactly once", f"{r['ids_once']} ({r['rows']} rows, {r['missing']} missing, "
                                        f"{r['duplicates']} twice)"),
        ("status counts", f"{r['counts']} (expected {r['expected']}: {'exact' if r['counts_ok'] else 'DIFFERENT'})"),
        ("workers / nodes used", f"{r['workers']} / {r['nodes']}"),
        ("ideal / span / wall / start-up s", f"{r['ideal_s']:.1f} / {r['span_s']:.1f} / {r['wall_s']:.1f} / "
                                             f"{r['startup_s']:.1f} (after the last trial: {r['after_trials_s']:.1f})"),
        ("span / ideal", f"{r['span_ratio']:.3f} (goal <= 1.10: {'met' if r['goal_span'] else 'NOT met'})"),
        *([("where the span goes", describe_budget(r["budget"]))] if r.get("budget") else []),
        *([("Ray's own ramp: bare actors", (lambda fl: (
            f"{fl['actors']} up {fl['first_ready_s']:.1f}-{fl['last_ready_s']:.1f} s after creation, "
            f"spread {fl['spread_s']:.1f} s: ramp {fl['ramp_worker_s']:.0f} worker-s "
            f"({fl['ramp_share']:.1%} of the ideal)"))(res["floor"]))] if res.get("floor") else []),
        ("wall <= 1.15 x ideal + start-up", f"{'met' if r['goal_wall_faults'] else 'NOT met'} "
                                            f"((wall - start-up) / ideal = {r['wall_ratio_less_startup']:.3f})"),
        ("driver RSS first row / peak / growth MB", f"{r['rss_first_row_mb']:.0f} / {r['rss_peak_mb']:.0f} / "
                                                    f"{r['rss_growth_mb']:.0f} "
                                                    f"(goal: {'met' if r['goal_memory'] else 'NOT met'})"),
        ("driver CPU per trial (over the run)", f"{r['driver_cpu_ms_per_trial']:.2f} ms"),
        ("bytes per trial: compacted / as parts", f"{f['bytes_per_trial_compacted'] or 0:.0f} / "
                                                  f"{f['bytes_per_trial_as_parts'] or 0:.0f}"),
        ("parts left / compacted", f"{f['parts_left']} / {f['compacted']}"),
        ("read s: pandas / polars / duckdb / load_results",
         f"{rd.get('pandas')} / {rd.get('polars')} / {rd.get('duckdb')} / {rd.get('load_results')}"),
        ("report s: terminal / html", f"{res['report']['report_terminal_s']} / {res['report']['report_html_s']}"),
    ]
    if "zero" in res:
        z = res["zero"]
        lines += [("zero-length trials: trials/s, driver CPU ms/trial",
                   f"{z['trials_per_s']:.1f}, {z['driver_cpu_ms_per_trial']:.2f} ({z['trials']} trials, "
                   f"ids once: {z['ids_once']}, driver busy {z['driver_busy_share']:.0%} of the span)")]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
