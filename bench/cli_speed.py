"""How long the driver's own commands take (BENCHMARKS.md, "The driver's own commands").

``validate``, ``run --dry-run`` and ``backends``, as whole processes (goals: <= 1.5 s, <= 1.5 s,
<= 4 s on an H100 host).

Each command is started ``--runs`` times (after one warm-up run, not counted, that fills the page
cache and writes .pyc files), the commands taking turns so a drift in the machine's speed reaches
all of them alike; wall time from start to exit, medians quoted. ``python -c pass`` is timed with
them: the interpreter's own start, below which no command can go. Wall and CPU seconds are both shown:
on a shared machine the CPU seconds are the steadier figure.

Runs without the package installed (``python -m orchestrator.cli`` with the tree on PYTHONPATH)::

    PYTHONPATH=$PWD python3 bench/cli_speed.py
    python3 bench/cli_speed.py --tree /path/to/old/checkout --tree .   # before/after, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOALS = {"validate": 1.5, "run --dry-run": 1.5, "backends": 4.0}


def commands(plan: str) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "orchestrator.cli"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "validate": [*cli, "validate", plan],
        "run --dry-run": [*cli, "run", plan, "--dry-run"],
        "backends": [*cli, "backends"],
    }


def run_once(argv: list[str], tree: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv`` in ``tree``. CPU time (user + system of the
    process and what it waited for) is steadier than wall time on a shared machine."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} in {tree} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(trees: list[Path], plan: str, runs: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    cmds = commands(plan)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(str(t), c): [] for t in trees for c in cmds}
    for tree in trees:  # warm-up, not counted
        for argv in cmds.values():
            run_once(argv, tree)
    for _ in range(runs):
        for tree in trees:
            for name, argv in cmds.items():
                times[(str(tree), name)].append(run_once(argv, tree))
    return times


def table(times: dict[tuple[str, str], list[tuple[float, float]]], trees: list[Path]) -> str:
    tag = {str(t): chr(ord("A") + i) for i, t in enumerate(trees)}
    head = (f"{'tree ' if len(trees) > 1 else ''}{'command':<16} {'wall median':>11} {'min':>6} {'max':>6} "
            f"{'cpu median':>10}  goal (wall median)")
    lines = [head, "-" * len(head)]
    for (tree, name), runs in times.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"<= {goal:g} s: {'met' if statistics.median(wall) <= goal else 'NOT met'}"
        prefix = f"{tag[tree]:<5}" if len(trees) > 1 else ""
        lines.append(f"{prefix}{name:<16} {statistics.median(wall):11.2f} {min(wall):6.2f} {max(wall):6.2f} "
                     f"{statistics.median(cpu):10.2f}  {verdict}")
    if len(trees) > 1:
        lines += [f"{tag[str(t)]}: {t}" for t in trees]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="counted runs of each command (default 7)")
    ap.add_argument("--plan", default="plans/h100.yaml", help="plan for validate and --dry-run, relative to each tree")
    ap.add_argument("--tree", action="append", type=Path,
                    help="checkout to time (repeat to compare, e.g. before and after); default: this one")
    ap.add_argument("--json", type=Path, help="also write every run's time here")
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    times = measure(trees, args.plan, args.runs)
    print(f"{args.runs} runs each, wall seconds of the whole process; {os.cpu_count()} CPUs; {sys.executable}")
    print(table(times, trees))
    if args.json:
        args.json.write_text(json.dumps([{"tree": t, "command": c, "wall_s": [w for w, _ in runs],
                                          "cpu_s": [u for _, u in runs]} for (t, c), runs in times.items()], indent=1))


if __name__ == "__main__":
    main()
