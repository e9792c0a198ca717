"""The driver's own cost per trial, quickly: zero-length trials on a local embedded Ray, in this process.

    python bench/driver_cost.py [--trials 1000] [--gpus 8] [--profile 25]

Starts ``ray.init(num_gpus=G)`` here (logical GPUs, as the tests do), runs ``run_plan`` on
``bench/scale.py``'s plan of N trials of no length, and prints, from the first stored row to the
end of the run (compaction included): the driver's CPU time per trial (all its threads: the loop,
the part writer, Ray's own) and trials per second. ``--profile K``: also the K functions of the
scheduling loop's thread with the most time of their own (cProfile: it slows the loop, so compare
runs with the same setting). What a whole cluster adds: ``bench/scale.py --zero-length``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--profile", type=int, default=0, metavar="K")
    a = ap.parse_args()
    import ray

    from bench.scale import make_plan
    from orchestrator.run import run_plan

    ray.init(num_gpus=a.gpus, num_cpus=max(a.gpus, 2), include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as d:
        plan = Path(d) / "zero.yaml"
        plan.write_text(make_plan(a.trials, 0.0, name="zero")[0])
        first: list[tuple[float, float]] = []

        def on_row(row: dict[str, Any]) -> None:
            if not first:
                first.append((time.perf_counter(), time.process_time()))

        prof = cProfile.Profile() if a.profile else None
        if prof:
            prof.enable()
        result = run_plan(plan, out=Path(d) / "out", workers=a.gpus, on_row=on_row)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - first[0][0], time.process_time() - first[0][1]
    n = len(result.rows)
    print(f"{n} zero-length trials ({result.counts}) on {a.gpus} logical GPUs, {len(result.workers)} workers; "
          f"{result.compaction.parts if result.compaction else '?'} part files")
    print(f"from the first row to the end: {wall:.2f} s, {n / wall:.1f} trials/s; driver CPU {cpu:.2f} s = "
          f"{cpu / n * 1e3:.2f} ms a trial{' (cProfile on)' if prof else ''}")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)


if __name__ == "__main__":
    main()
