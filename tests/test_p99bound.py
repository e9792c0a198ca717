"""The p99 upper confidence bound (workers/measure/p99bound.py) holds for queued latencies: its coverage
over many simulated M/D/1 runs, whose p99 is known exactly, is the stated confidence."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest

from workers.measure import p99bound


def md1_sojourn(rho: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Times in system (service time 1) of ``n`` requests of an M/D/1 queue that starts empty: Lindley's
    recursion, W_i = max(0, W_{i-1} + 1 - gap_i), as a reflected random walk."""
    steps = 1.0 - rng.exponential(1 / rho, n)
    steps[0] = 0.0
    walk = np.cumsum(steps)
    return walk - np.minimum(np.minimum.accumulate(walk), 0.0) + 1.0


def md1_quantile(rho: float, q: float) -> float:
    """The exact q quantile of the M/D/1 time in system (service 1): Erlang's waiting-time distribution
    P(W <= t) = (1 - rho) * sum_{k <= t} (rho (k - t))^k / k! * exp(-rho (k - t)), in 60 digits (the
    alternating sum loses every digit in floats), solved by bisection; plus the service time."""
    getcontext().prec = 60
    lam = Decimal(rho)

    def cdf(t: float) -> Decimal:
        td = Decimal(t)
        return (1 - lam) * sum((lam * (k - td)) ** k / math.factorial(k) * (-(lam * (k - td))).exp()
                               for k in range(int(t) + 1))

    lo, hi = 0.0, 200.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return lo + 1.0


@pytest.mark.parametrize(("rho", "n", "runs"), [(0.5, 10_000, 300), (0.9, 100_000, 100)])
def test_the_bound_covers_the_true_p99_at_its_confidence(rho: float, n: int, runs: int) -> None:
    true_p99 = md1_quantile(rho, 0.99)
    rng = np.random.default_rng([35, int(rho * 10)])
    ours, independent, undecided = 0, 0, 0
    for _ in range(runs):
        lat = md1_sojourn(rho, n, rng)
        u = p99bound.upper(lat)
        if u is None:
            undecided += 1
            continue
        ours += u >= true_p99
        iid = p99bound.upper(lat, independent=True)
        independent += iid is not None and iid >= true_p99
    decided = runs - undecided
    assert decided >= 0.9 * runs, f"{undecided} of {runs} runs of {n} requests too short to bound"
    c = p99bound.CONFIDENCE
    floor = c - 3 * math.sqrt(c * (1 - c) / decided)  # the stated confidence, less three sampling errors
    assert ours / decided >= floor, f"covered the true p99 {true_p99:.3f} in {ours}/{decided} runs"
    if rho >= 0.9:  # the independent-sample bound is what this bound fixes: it misses near saturation
        assert independent / decided < floor


def test_decide_passes_fails_and_extends() -> None:
    rng = np.random.default_rng(7)
    lat = md1_sojourn(0.5, 20_000, rng)
    p99 = md1_quantile(0.5, 0.99)
    assert p99bound.decide(lat, 2 * p99) == "pass"
    assert p99bound.decide(lat, 0.5 * p99) == "fail"
    assert p99bound.decide(lat[:50], 2 * p99) == "undecided"  # 50 requests can't show 1 in 100
    assert p99bound.upper(lat[:50]) is None
