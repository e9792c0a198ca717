"""find-peak's search (the policy is in ``workers.scenarios._lanes``' doc): bisection between server runs
for the highest rate whose p99 stays within the bound.

Each probe is judged on its p99 point estimate (the default), or, with the trial's ``confident``, on
the p99's upper confidence bound (``workers.measure.p99bound``): a probe passes when the bound is
within ``latency_bound_ms``, fails when the share of requests over it is above 1% with the same
confidence, and is otherwise *undecided*: it is run again with twice the requests (the same rate, a
longer schedule) until it decides or the trial's time runs out; a probe still undecided then is not
passed, and the search stops there. The row keeps every probe's rate, p99, upper bound, requests
and verdict.

A generation trial's probe (its run has ``ttft_ms_p99``) is judged on two bounds: the p99 time to
first token (from the scheduled arrival) within ``latency_bound_ms`` -- point estimate or upper
confidence bound, as above -- and the p99 time per output token within ``tpot_bound_ms`` (its point
estimate; no bound given: not judged). ``probe_p99_ms`` then holds the TTFT p99s, ``probe_tpot_p99_ms``
the TPOT p99s.
"""

from __future__ import annotations

import math
import time

import numpy as np

from workers.contract import Trial
from workers.measure import energy, p99bound
from workers.row import Row
from workers.scenarios._lanes import kept_schedule, offline, server_at
from workers.scenarios._session import LaneThreads

#: find-peak stops when its bracket is this narrow, relative to its upper end.
PEAK_REL_TOL = 0.02
#: find-peak's offline capacity run: this share of the trial's time, at most min_duration_s.
CAPACITY_SHARE = 0.1
#: A probe that can't decide is run again with this many times its requests.
EXTEND_BY = 2


def _bounded(cols: Row, run_latency_ms: np.ndarray) -> tuple[float, np.ndarray]:
    """The p99 and the per-request samples ``latency_bound_ms`` bounds: a generation run's time to first
    token, any other run's request latency."""
    if "ttft_ms_p99" in cols:
        return cols["ttft_ms_p99"], np.asarray(cols["ttft_samples_ms"], dtype=np.float64)
    return cols["latency_ms_p99"], run_latency_ms


def _judge(cols: Row, trial: Trial, rate_tol: float, latency_ms: np.ndarray) -> str:
    """pass, fail or undecided (only with ``confident``: the bound can't tell yet; a short run's achieved
    rate is as uncertain, so the schedule is judged only once the bound has decided). ``latency_ms``:
    the bounded samples in arrival order; a generation run's p99 TPOT must be within ``tpot_bound_ms`` too."""
    p99 = _bounded(cols, latency_ms)[0]
    tpot, tpot_bound = cols.get("tpot_ms_p99"), getattr(trial, "tpot_bound_ms", None)
    tpot_ok = tpot is None or tpot_bound is None or tpot <= tpot_bound
    if not trial.confident:
        return "pass" if kept_schedule(cols, rate_tol) and p99 <= trial.latency_bound_ms and tpot_ok else "fail"
    verdict = p99bound.decide(latency_ms, float(trial.latency_bound_ms))  # type: ignore[arg-type]
    if verdict == "pass" and not tpot_ok:
        return "fail"
    return "fail" if verdict == "pass" and not kept_schedule(cols, rate_tol) else verdict


def find_peak(threads: LaneThreads, trial: Trial, meter: energy.Meter | None = None, rate_tol: float = 0.01) -> Row:
    """Bisection over server runs for the highest rate whose p99 is within the bound (see the module's doc)."""
    budget = trial.measure.max_time_s
    t_start = time.perf_counter()
    cap_run = offline(threads, 1, min(trial.min_duration_s, CAPACITY_SHARE * budget), budget)
    cap = len(cap_run.end) / cap_run.window_s
    lo, hi, fail = 0.0, cap, None
    best: Row | None = None
    lowest_fail: Row | None = None  # the row's figures when no rate passed
    probes: dict[str, list] = {"rates": [], "p99": [], "upper": [], "requests": [], "passed": [], "verdicts": [],
                               "tpot": []}
    out_of_time = False
    while (hi - lo) > PEAK_REL_TOL * hi and not out_of_time:
        r = (lo + hi) / 2
        want = trial.min_requests
        while True:
            n = max(want, math.ceil(r * trial.min_duration_s))
            left = budget - (time.perf_counter() - t_start)
            if n / r > left:
                out_of_time = True
                break  # the next run would not fit in the trial's time: the bracket stays as it is
            cols, run = server_at(threads, trial, r, left, meter, min_requests=want)
            order = run.arrival.argsort(kind="stable") if run.arrival is not None else slice(None)
            p99, samples = _bounded(cols, run.latency_ms)
            verdict = _judge(cols, trial, rate_tol, samples[order])
            upper = p99bound.upper(samples[order]) if "ttft_ms_p99" in cols else cols["latency_ms_p99_upper"]
            for key, value in (("rates", r), ("p99", p99), ("upper", upper), ("requests", cols["requests"]),
                               ("passed", verdict == "pass"), ("verdicts", verdict), ("tpot", cols.get("tpot_ms_p99"))):
                probes[key].append(value)
            if verdict != "undecided":
                break
            want = n * EXTEND_BY  # extended, not passed
        if out_of_time or verdict == "undecided":
            break
        if verdict == "pass":
            lo, best = r, cols
        else:
            hi = fail = r
            lowest_fail = cols
    out = dict(best or lowest_fail or {})
    out.update(peak_rate=lo if best else None, peak_rate_fail=fail, probe_rates=probes["rates"],
               probe_p99_ms=probes["p99"], probe_p99_upper_ms=probes["upper"], probe_requests=probes["requests"],
               probe_passed=probes["passed"], probe_verdicts=probes["verdicts"],
               probe_tpot_p99_ms=probes["tpot"] if "ttft_ms_p99" in out else None,
               throughput=lo * trial.batch_size if best else None)
    return out
