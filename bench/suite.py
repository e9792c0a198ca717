"""How long ``make test``'s pytest takes, and the host's speed (BENCHMARKS.md, "How long does the test suite take?").

The goal: at most 200 s of pytest on a 2-vCPU machine where the 382-test commit 5c52a12 took 156 s,
that is at most GOAL_RATIO (1.28) times that commit's time on the same host, measured alternately
(``--base``): the host's speed moves both by 10-30% from one day to the next.

A suite's time says as much about the host as about the tests: the same commit (5e589aa) took 330.5 s
one day and 192.7 s the next on "the same" 2-vCPU machine, whose ``import torch`` took 4.5 and 2.0
CPU-s. So every run is bracketed by a host calibration, and both are printed: the CPU seconds of
``import torch`` in a fresh interpreter (what the suite does in every pytest process, CLI run and
torch worker) and of a fixed pure-Python loop: the median of three runs before the suite and of three
after it, and the mean of those two.
Figures from different days compare only where their calibrations agree.

The pytest command is ``make test``'s own (the ``PYTEST :=`` line of the tree's Makefile, with the
tree's ``.venv``); ruff and the install are not timed. Machine-wide CPU (``/proc/stat``: Ray's
daemons, workers and CLI subprocesses count too) gives how busy the two cores were, and steal how
much of them the hypervisor kept. Run it on an otherwise idle machine::

    python3 bench/suite.py                      # once, in this checkout (make test's .venv)
    python3 bench/suite.py --runs 3 --tree CLONE --log-dir LOGS   # CLONE: a clean clone
    python3 bench/suite.py --runs 2 --tree CLONE --base OLD     # OLD: a clone of 5c52a12, run
                                                                #   alternately; the ratio of medians
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(REPO))

from bench.cli_speed import run_once  # noqa: E402

GOAL_RATIO = 200 / 156  # the tree's pytest time over the base's (5c52a12), same host
CALIBRATIONS = {
    "import torch": "import torch",
    "py loop": "s = 0\nfor i in range(10_000_000):\n    s += i",
}


def machine_ticks() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot: busy is every state but idle,
    iowait and steal."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def pytest_command(tree: Path) -> tuple[list[str], dict[str, str]]:
    """``make test``'s pytest argv and the variables it sets, from the tree's Makefile."""
    makefile = tree / "Makefile"
    m = re.search(r"^PYTEST\s*:=\s*(.+)$", makefile.read_text(), re.M)
    if m is None:
        raise SystemExit(f"error: no 'PYTEST :=' line in {makefile}")
    words = shlex.split(m.group(1).replace("$(BIN)", str(tree / ".venv" / "bin")))
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not Path(words[0]).exists():
        raise SystemExit(f"error: {words[0]} does not exist: run 'make test' (or make {tree}/.venv/.installed) first")
    return words, env


def calibrate(python: str, tree: Path, times: int = 3) -> dict[str, float]:
    """The median CPU seconds of each calibration, run by ``python`` in ``tree``."""
    return {name: statistics.median(run_once([python, "-c", code], tree)[1] for _ in range(times))
            for name, code in CALIBRATIONS.items()}


def run_suite(tree: Path, argv: list[str], env: dict[str, str], log: Path) -> dict:
    calib_before = calibrate(argv[0], tree)
    load = os.getloadavg()[0]
    busy0, steal0 = machine_ticks()
    t0 = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    busy1, steal1 = machine_ticks()
    calib_after = calibrate(argv[0], tree)
    tail = log.read_text().splitlines()[-1:] or [""]
    summary = re.search(r"in ([\d.]+)s", tail[0])
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail[0])}
    cores = os.cpu_count() or 1
    return {
        "rc": rc, "pytest_s": float(summary.group(1)) if summary else None, "wall_s": round(wall, 1),
        **counts, "machine_cpu_s": round(busy1 - busy0, 1),
        "busy_pct": round(100 * (busy1 - busy0) / (wall * cores), 1),
        "steal_pct": round(100 * (steal1 - steal0) / (wall * cores), 1), "load_before": round(load, 2),
        **{f"{k} cpu_s": round((calib_before[k] + calib_after[k]) / 2, 2) for k in CALIBRATIONS},
        "log": str(log),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=REPO, help="checkout to test (its Makefile and .venv)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--log-dir", type=Path, default=None, help="where each run's pytest output goes")
    ap.add_argument("--base", type=Path, default=None,
                    help="another checkout (the 382-test commit), run alternately with --tree: the ratio")
    args = ap.parse_args()
    trees = [args.tree.resolve(), *([args.base.resolve()] if args.base else [])]
    commands = {t: pytest_command(t) for t in trees}
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="suite-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} vCPUs, {', '.join(map(str, trees))}, logs in {log_dir}", file=sys.stderr)
    rows: dict[Path, list[dict]] = {t: [] for t in trees}
    for i in range(args.runs):
        for k, t in enumerate(trees):
            argv, extra_env = commands[t]
            row = run_suite(t, argv, {**os.environ, **extra_env}, log_dir / f"run{i + 1}{'-base' * k}.log")
            print(json.dumps({"tree": str(t), **row}), flush=True)
            rows[t].append(row)
    print(f"\n{'tree':4} {'run':>3} {'pytest s':>9} {'passed':>6} {'failed':>6} {'CPU-s':>7} {'busy %':>6} "
          f"{'steal %':>7} {'torch CPU-s':>11} {'loop CPU-s':>10}")
    medians = {}
    for k, t in enumerate(trees):
        secs = [float("nan") if r["pytest_s"] is None else r["pytest_s"] for r in rows[t]]  # None: no summary
        for i, r in enumerate(rows[t], 1):
            print(f"{'base' if k else 'tree':4} {i:>3} {secs[i - 1]:>9.1f} {r.get('passed', 0):>6} "
                  f"{r.get('failed', 0):>6} {r['machine_cpu_s']:>7.0f} {r['busy_pct']:>6.0f} {r['steal_pct']:>7.1f}"
                  f" {r['import torch cpu_s']:>11.2f} {r['py loop cpu_s']:>10.2f}")
        medians[t] = statistics.median(secs)
    if args.base:
        ratio = medians[trees[0]] / medians[trees[1]]
        print(f"median pytest s: tree {medians[trees[0]]:.1f}, base {medians[trees[1]]:.1f}: ratio {ratio:.3f} "
              f"(goal <= {GOAL_RATIO:.2f}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    elif args.runs > 1:
        print(f"median pytest s: {medians[trees[0]]:.1f}")
    sys.exit(max(r["rc"] for t in trees for r in rows[t]))


if __name__ == "__main__":
    main()
