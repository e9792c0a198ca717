"""Where a run's span goes, from its stored rows (BENCHMARKS.md, "How far does one driver scale? ...").

    python bench/span_budget.py RUN_DIR [--nominal-s 1]

W workers over the span (first trial's start to the last one's end) have W x span worker-seconds.
The ideal spends exactly trials x nominal of them. The rest, split by what each worker was doing:

    ramp      before the worker's first trial (Ray starting its process, the readiness probe)
    overrun   its trials took longer in the worker than nominal (the trial's own bookkeeping, a busy CPU)
    gaps      between a trial's end and its next one's start: the row back to the driver, the driver's
              loop, the next trial out (median and p90 of one gap printed too)
    tail      after its last trial, while others still ran

span / ideal = 1 + (ramp + overrun + gaps + tail) / (trials x nominal), for runs where every
worker has trials of one nominal length (bench/scale.py's sleep runs). Needs no Ray.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def span_budget(out: Path, nominal_s: float) -> dict[str, Any]:
    """The split above, in worker-seconds, of the run stored in ``out``."""
    from orchestrator.results.read import load_results

    t = load_results(out, columns=["worker", "started_at", "duration_s"])
    by_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for w, s, d in zip(*(t.column(c).to_pylist() for c in ("worker", "started_at", "duration_s")), strict=True):
        if s is not None and d is not None:
            by_worker[w].append((s.timestamp(), s.timestamp() + d))
    first = min(s for trials in by_worker.values() for s, _ in trials)
    last = max(e for trials in by_worker.values() for _, e in trials)
    gaps: list[float] = []
    ramp = tail = busy = 0.0
    for trials in by_worker.values():
        trials.sort()
        ramp += trials[0][0] - first
        tail += last - trials[-1][1]
        busy += sum(e - s for s, e in trials)
        gaps += [b[0] - a[1] for a, b in zip(trials, trials[1:])]
    n = sum(len(v) for v in by_worker.values())
    ideal = n * nominal_s
    gaps.sort()
    return {"workers": len(by_worker), "trials": n, "span_s": last - first,
            "worker_s": len(by_worker) * (last - first), "ideal_worker_s": ideal,
            "ramp": ramp, "overrun": busy - ideal, "gaps": sum(gaps), "tail": tail,
            "last_worker_first_trial_s": max(v[0][0] for v in by_worker.values()) - first,
            "gap_ms_median": 1e3 * statistics.median(gaps) if gaps else None,
            "gap_ms_p90": 1e3 * gaps[int(0.9 * (len(gaps) - 1))] if gaps else None}


def describe(b: dict[str, Any]) -> str:
    over = b["worker_s"] - b["ideal_worker_s"]
    parts = ", ".join(f"{k} {b[k]:.0f} ({b[k] / b['ideal_worker_s']:.1%})" for k in ("ramp", "overrun", "gaps", "tail"))
    return (f"{b['workers']} workers x {b['span_s']:.1f} s = {b['worker_s']:.0f} worker-s, "
            f"ideal {b['ideal_worker_s']:.0f}; over it {over:.0f} ({over / b['ideal_worker_s']:.1%}): {parts}; "
            f"last worker's first trial at {b['last_worker_first_trial_s']:.1f} s; "
            f"a gap {b['gap_ms_median']:.1f} ms median, {b['gap_ms_p90']:.1f} p90")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--nominal-s", type=float, default=1.0, help="each trial's nominal length")
    a = ap.parse_args()
    print(describe(span_budget(a.run, a.nominal_s)))


if __name__ == "__main__":
    main()
