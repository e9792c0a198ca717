"""How busy a sweep keeps its GPUs, and where the rest goes (BENCHMARKS.md, "Where a sweep's worker-time goes").

    python bench/sweep_efficiency.py RUN_DIR                 # a run that is already there
    python bench/sweep_efficiency.py --plan plans/h100.yaml  # run it first (into $OUT or a temp dir)

Efficiency = the time the GPUs spend in warm-up or timed iterations (``warmup_s + timed_s`` of every
row) over the run's wall time times its workers. Runs older than those columns (commit 0a32d37 and
before) get an estimate from the per-iteration host times (``host_samples_ms``, warm-up iterations
at their median), printed for newer runs too, so the two can be compared. ``--tree DIR`` runs the
plan with another checkout's code (an older commit, for a before figure); the analysis is this
checkout's. The rest, per worker-second: start-up (launch to the first trial), setup (model copies,
exports, session builds, graph captures, compiles: ``setup_s``, of which ``export_s``,
``compile_time_s``, ``engine_build_s``), parity (``parity_s``: references and checks), the rest of
each trial (later repeats' setup, teardown, row building), and scheduling gaps (worker-time in no
trial at all). Prints one table; ``--json`` writes the figures too.

Build ahead (docs/cluster.md#build-ahead): with ``--ahead``, the plan runs twice, each time with
cold caches (a fresh ``INFER_ORCH_CACHE``: ONNX exports and Inductor's cache), first with
``--builders 0`` (every export on the worker, as before build-ahead) and then with build-ahead
(``--builders N``, or the nodes' spare CPUs without it), and a last table compares them: wall
time, GPU busy, exports built on the workers, the time the workers waited for a build-ahead task
(``artifact_wait_s``) and their whole setup::

    python bench/sweep_efficiency.py --plan bench/h100_sweep.yaml --ahead [--builders 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sum(rows: list[dict[str, Any]], col: str) -> float:
    return float(sum(r.get(col) or 0.0 for r in rows))


def breakdown(run_dir: Path, launched_at: float | None = None) -> dict[str, Any]:
    """The figures of one run directory (``launched_at``: the CLI's launch, epoch seconds, if known)."""
    from orchestrator.results.read import load_results

    rows = load_results(run_dir).to_pylist()
    info = json.loads((run_dir / "_run.json").read_text())
    workers = max(1, len(info.get("workers") or []))
    starts = [r["started_at"].timestamp() for r in rows if r.get("started_at")]
    ends = [r["started_at"].timestamp() + (r.get("duration_s") or 0.0) for r in rows if r.get("started_at")]
    t0 = launched_at if launched_at is not None else dt.datetime.fromisoformat(info["started_at"]).timestamp()
    wall = max(ends) - t0
    capacity = wall * workers
    estimate = _estimated_busy(rows)
    measured = "timed_s" in rows[0] and "warmup_s" in rows[0]
    busy = _sum(rows, "warmup_s") + _sum(rows, "timed_s") if measured else estimate
    setup, parity = _sum(rows, "setup_s"), _sum(rows, "parity_s")
    in_trials = _sum(rows, "duration_s")
    startup = min(starts) - t0
    # export_s holds a wait for a build-ahead task's export too: the wait is a part of its own
    waited = _sum(rows, "artifact_wait_s")
    exports = _sum(rows, "export_s") - _sum([r for r in rows if r.get("export_s") is not None], "artifact_wait_s")
    parts = {
        "GPU busy (warm-up + timed)": busy,
        "start-up (launch to first trial) x workers": startup * workers,
        "setup: exports": exports,
        "setup: waiting for a build-ahead task": waited,
        "setup: torch.compile": _sum(rows, "compile_time_s"),
        "setup: TensorRT engines": _sum(rows, "engine_build_s"),
        "setup: the rest (model copies, sessions, captures)": setup - exports - waited
        - _sum(rows, "compile_time_s") - _sum(rows, "engine_build_s"),
        "parity (references and checks)": parity,
        "rest of trials (later repeats' setup, teardown, copies)": in_trials - busy - setup - parity,
        "between trials (scheduling, worker replacement)": capacity - startup * workers - in_trials,
    }
    return {"run": str(run_dir), "trials": len(rows), "workers": workers, "wall_s": wall,
            "efficiency": busy / capacity, "seconds": parts, "busy_measured": measured,
            "busy_estimated_s": estimate}


def _estimated_busy(rows: list[dict[str, Any]]) -> float:
    """GPU-busy seconds from the per-iteration host times alone (for runs older than ``timed_s``):
    every timed iteration's host wall time, plus the warm-up iterations at the median of those."""
    import statistics

    total = 0.0
    for r in rows:
        host = r.get("host_samples_ms") or r.get("samples_ms") or []
        if host:
            total += sum(host) / 1e3 + (r.get("warmup_iters") or 0) * statistics.median(host) / 1e3
    return total


def table(b: dict[str, Any]) -> str:
    cap = b["wall_s"] * b["workers"]
    how = "measured" if b["busy_measured"] else "estimated from per-iteration host times (no timed_s column)"
    lines = [f"{b['trials']} trials on {b['workers']} worker(s), wall {b['wall_s']:.1f} s: "
             f"GPU busy {b['efficiency']:.1%} of the worker-time ({how}; the estimate gives "
             f"{b['busy_estimated_s'] / (b['wall_s'] * b['workers']):.1%})",
             "| where the worker-time went | s | share |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v:.1f} | {v / cap:.1%} |" for k, v in b["seconds"].items()]
    return "\n".join(lines)


def compare(before: dict[str, Any], after: dict[str, Any], builders: str) -> str:
    """The last table of ``--ahead``: the same plan, cold caches, without and with build-ahead."""
    def row(name: str, fmt: str, get: Any) -> str:
        return f"| {name} | {fmt.format(get(before))} | {fmt.format(get(after))} |"

    sec = lambda key: lambda b: b["seconds"][key]  # noqa: E731
    return "\n".join([
        f"| cold caches | builders 0 | builders {builders} |", "| --- | ---: | ---: |",
        row("wall, s", "{:.1f}", lambda b: b["wall_s"]),
        row("GPU busy", "{:.1%}", lambda b: b["efficiency"]),
        row("exports on the workers, s", "{:.1f}", sec("setup: exports")),
        row("waiting for build-ahead, s", "{:.1f}", sec("setup: waiting for a build-ahead task")),
        row("torch.compile, s", "{:.1f}", sec("setup: torch.compile")),
        row("setup in all, s", "{:.1f}", lambda b: sum(v for k, v in b["seconds"].items() if k.startswith("setup"))),
    ])


def run(plan: str, out: Path, extra: list[str], tree: Path = REPO, cache: Path | None = None) -> tuple[Path, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    if cache is not None:  # cold: a cache of its own (ONNX exports, Inductor's graphs)
        env["INFER_ORCH_CACHE"] = str(cache)
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(Path(plan).resolve()),
                           "--out", str(out), *extra], cwd=tree, env=env, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
    if not (out / "_run.json").exists():
        raise SystemExit(f"the run wrote no results (exit {proc.returncode})")
    return out, launched


def _before_after(args: argparse.Namespace, extra: list[str]) -> None:
    """``--ahead``: the plan with cold caches, builders 0 and then build-ahead; the comparison last."""
    root = Path(os.environ.get("OUT") or tempfile.mkdtemp())
    figures = {}
    for name, builders in (("builders-0", ["--builders", "0"]),
                           ("ahead", ["--builders", args.builders] if args.builders else [])):
        out = root / f"sweep-{Path(args.plan).stem}-{name}"
        run_dir, launched = run(args.plan, out, [*extra, *builders], args.tree.resolve(), cache=root / f"cache-{name}")
        figures[name] = breakdown(run_dir, launched)
        print(f"{name}:", table(figures[name]), sep="\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(compare(figures["builders-0"], figures["ahead"], args.builders or "(spare CPUs)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", type=Path, help="a run directory to analyse")
    ap.add_argument("--plan", help="run this plan first, then analyse it")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--tree", type=Path, default=REPO, help="run the plan with this checkout's code")
    ap.add_argument("--ahead", action="store_true", help="with --plan: cold caches, builders 0 and then build-ahead")
    ap.add_argument("--builders", help="with --ahead: build-ahead tasks per node [default: the nodes' spare CPUs]")
    args, extra = ap.parse_known_args()
    if args.plan and args.ahead:
        _before_after(args, extra)
        return
    if args.plan:
        tag = "" if args.tree.resolve() == REPO else f"-{args.tree.resolve().name.lstrip('.')}"
        out = Path(os.environ.get("OUT") or tempfile.mkdtemp()) / f"sweep-{Path(args.plan).stem}{tag}"
        run_dir, launched = run(args.plan, out, extra, args.tree.resolve())
        b = breakdown(run_dir, launched)
    elif args.run_dir:
        b = breakdown(args.run_dir)
    else:
        ap.error("give a RUN_DIR or --plan")
    if args.json:
        args.json.write_text(json.dumps(b, indent=2))
    print(table(b))


if __name__ == "__main__":
    main()
