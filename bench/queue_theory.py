"""The server scenario against M/D/1 (BENCHMARKS.md, "The server scenario against queueing theory").

One lane, Poisson arrivals at rate lambda = rho / D, a service that sleeps a fixed step: an M/D/1
queue, whose mean time in system is

    T = D + rho * D / (2 * (1 - rho))

With D the measured mean service time (the row's ``service_ms_mean``) and rho = lambda * D, the
row's mean latency should match T. Three figures per rho, to tell the sources of a gap apart:

- ``T/M/D/1``: measured mean latency over the formula (the check);
- ``T/P-K``: over the Pollaczek-Khinchine formula (M/G/1) with the measured second moment of the
  service time, T = E[S] + lambda * E[S^2] / (2 * (1 - rho)): a sleep is not exactly
  deterministic, least of all on a busy machine;
- ``T/Lindley``: over Lindley's recursion on the row's own arrivals and service times: what the
  harness adds beyond the queue itself (hand-over between requests, late wake-ups);
- ``sampling sd``: the seed-to-seed spread of a finite run's mean for an ideal M/D/1 queue of the
  same length (simulated here): how close the check can be expected to come.

Usage (minutes: requests * D / rho per rho)::

    python -m bench.queue_theory --out /tmp/qt --requests 50000 --step-ms 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from orchestrator.plan.expand import expand
from orchestrator.plan.load import parse_plan
from workers.models.build import ModelStore
from workers.trial import run_trial


def lindley_mean(arrivals: np.ndarray, service_s: np.ndarray) -> float:
    """Mean time in system of a one-server FIFO queue, from arrivals and service times alone."""
    wait, total = 0.0, 0.0
    for n in range(len(arrivals)):
        if n:
            wait = max(0.0, wait + service_s[n - 1] - (arrivals[n] - arrivals[n - 1]))
        total += wait + service_s[n]
    return total / len(arrivals)


def sampling_sd(rho: float, n: int, seeds: int = 8) -> float:
    """Seed-to-seed SD of the mean time in system of an ideal M/D/1 queue over ``n`` requests, relative."""
    theory = 1 + rho / (2 * (1 - rho))
    means = []
    for s in range(seeds):
        gaps = np.random.default_rng(1000 + s).exponential(1 / rho, n)
        means.append(lindley_mean(np.cumsum(gaps), np.ones(n)) / theory)
    return float(np.std(means))


def one(rho: float, step_s: float, requests: int) -> dict:
    plan = {"name": "queue-theory", "device": "cpu", "models": ["torchvision:resnet18"],
            "matrix": {"batch_sizes": [1], "backends": [{"backend": "sleep", "options": {"step_s": step_s}}]},
            "measure": {"warmup_iters": 5, "max_time_s": 3 * requests * step_s / rho + 60},
            "timeout_s": 6 * requests * step_s / rho + 600,
            "scenario": {"name": "server", "rates": rho / step_s, "min_requests": requests, "min_duration_s": 1}}
    (trial,) = expand(parse_plan(plan))
    t0 = time.perf_counter()
    row = run_trial(trial, "cpu", ModelStore())
    if row["status"] != "ok":
        raise SystemExit(f"rho {rho}: {row['status']}: {row['error']}")
    a = np.asarray(row["request_arrival_s"])
    s = np.asarray(row["request_service_ms"]) / 1e3
    lat = np.asarray(row["samples_ms"]) / 1e3
    lam = (len(a) - 1) / (a[-1] - a[0])  # the schedule's own rate
    d = s.mean()
    r = lam * d
    md1 = d + r * d / (2 * (1 - r))
    pk = d + lam * (s ** 2).mean() / (2 * (1 - r))
    starts, ends = np.asarray(row["request_start_s"]), np.asarray(row["request_end_s"])
    queued = a[1:] < ends[:-1]  # arrived while the one before was in service: it could start at its end
    handoff = (starts[1:] - ends[:-1])[queued]
    return {"rho_nominal": rho, "rho": r, "requests": len(a), "D_ms": d * 1e3, "service_cv": float(s.std() / d),
            "mean_ms": float(lat.mean() * 1e3), "md1_ms": md1 * 1e3, "ratio_md1": float(lat.mean() / md1),
            "ratio_pk": float(lat.mean() / pk), "ratio_lindley": float(lat.mean() / lindley_mean(a, s)),
            "handoff_us": float(handoff.mean() * 1e6) if handoff.size else None,
            "late_requests": row["late_requests"], "valid": row["valid"], "invalid_reasons": row["invalid_reasons"],
            "sampling_sd": sampling_sd(rho, len(a)), "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for results.json")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--step-ms", type=float, default=2.0, help="the sleep backend's service time, ms")
    ap.add_argument("--rhos", default="0.5,0.8,0.9")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for rho in (float(x) for x in args.rhos.split(",")):
        results.append(one(rho, args.step_ms / 1e3, args.requests))
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results[-1]), flush=True)
    print(f"\nM/D/1 on the sleep backend ({args.step_ms:g} ms step), mean time in system, measured / theory")
    print(f"{'rho':>5} {'requests':>9} {'D ms':>7} {'cv(S)':>6} {'mean ms':>8} {'M/D/1 ms':>9} {'T/M/D/1':>8} "
          f"{'T/P-K':>7} {'T/Lindley':>9} {'handoff us':>10} {'sampling sd':>11}")
    for r in results:
        print(f"{r['rho']:5.3f} {r['requests']:9d} {r['D_ms']:7.3f} {r['service_cv']:6.3f} {r['mean_ms']:8.3f} "
              f"{r['md1_ms']:9.3f} {r['ratio_md1']:8.4f} {r['ratio_pk']:7.4f} {r['ratio_lindley']:9.4f} "
              f"{r['handoff_us'] or 0:10.1f} {r['sampling_sd']:11.3f}")


if __name__ == "__main__":
    main()
