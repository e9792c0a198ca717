"""Statistics on synthetic samples with known answers, and the timing loop with a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.contract import MeasureSpec
from workers.measure import stats
from workers.measure.timing import measure


def test_percentiles_and_spread_of_1_to_100_follow_the_linear_method():
    s = stats.latency_stats(np.arange(1, 101), batch_size=4)
    assert s["latency_ms_median"] == s["latency_ms_p50"] == 50.5
    # linear (Hyndman & Fan type 7): x[(n - 1) p] interpolated
    assert s["latency_ms_p90"] == pytest.approx(90.1)
    assert s["latency_ms_p95"] == pytest.approx(95.05)
    assert s["latency_ms_p99"] == pytest.approx(99.01)
    assert s["latency_ms_iqr"] == pytest.approx(75.25 - 25.75)
    assert s["latency_ms_std"] == pytest.approx(math.sqrt(100 * 101 / 12))  # ddof=1 variance of 1..n
    assert s["latency_ms_cv"] == pytest.approx(s["latency_ms_std"] / 50.5)
    assert (s["latency_ms_min"], s["latency_ms_max"], s["outliers"]) == (1, 100, 0)
    assert s["throughput"] == pytest.approx(4 * 1e3 / 50.5)


def test_outliers_are_counted_with_tukey_fences():
    a = np.concatenate([np.arange(1, 101), [250.0, 1000.0]])  # Q3 + 1.5 IQR = 151.25 + small shift
    s = stats.latency_stats(a, 1)
    assert s["outliers"] == 2
    assert stats.latency_stats(np.concatenate([a, [140.0]]), 1)["outliers"] == 2  # inside the fence


def test_bootstrap_ci_of_the_median_is_seeded_and_reproducible():
    a = np.random.default_rng(1).exponential(2.0, 300)
    def ci(seed):
        s = stats.latency_stats(a, 1, seed=seed)
        return s["latency_ms_ci_low"], s["latency_ms_median"], s["latency_ms_ci_high"]

    assert ci(7) == ci(7) and ci(7) != ci(8)
    lo, med, hi = ci(7)
    assert lo <= med <= hi


def test_ci_of_the_median_has_95_percent_coverage_and_the_expected_width():
    """N(10, 1): the median's CI covers 10 in ~95% of samples; its half-width ~ 1.96 * 1.2533 / sqrt(n)."""
    rng = np.random.default_rng(0)
    boot = free = 0
    boot_width = free_width = 0.0
    trials, n = 200, 101
    for i in range(trials):
        a = rng.normal(10.0, 1.0, n)
        lo, hi = stats.bootstrap_median_ci(a, seed=i, resamples=400)
        boot += lo <= 10.0 <= hi
        boot_width += (hi - lo) / trials
        flo, fhi = stats.median_ci_distribution_free(np.sort(a))
        free += flo <= 10.0 <= fhi
        free_width += (fhi - flo) / trials
    assert 0.88 <= boot / trials <= 0.99
    assert 0.90 <= free / trials <= 0.99
    # covering 10 by being wide is no interval: both are as wide as the median's spread says (the
    # order-statistic one up to ~15% wider: its ranks are rounded outwards)
    width = 2 * 1.959964 * math.sqrt(math.pi / 2) / math.sqrt(n)
    assert 0.9 * width <= boot_width <= 1.1 * width and 1.0 * width <= free_width <= 1.25 * width
    a = rng.normal(10.0, 1.0, 10_000)
    s = stats.latency_stats(a, 1)
    expected = 1.959964 * math.sqrt(math.pi / 2) / math.sqrt(a.size)
    assert (s["latency_ms_ci_high"] - s["latency_ms_ci_low"]) / 2 == pytest.approx(expected, rel=0.2)
    assert stats.relative_ci(a) == pytest.approx(expected / 10.0, rel=0.2)
    assert s["latency_ms_median"] == pytest.approx(10.0, abs=0.04)


def test_between_run_cv():
    assert stats.between_run_cv([1.0]) is None
    assert stats.between_run_cv([1.0, 1.0, 1.0]) == 0.0
    assert stats.between_run_cv([9.0, 10.0, 11.0]) == pytest.approx(0.1)


class FakeRunner:
    """A runner on a fake clock: iteration i takes latency(i) ms of fake time."""

    def __init__(self, latency):
        self.latency, self.i, self.now, self.last = latency, 0, 0.0, 0.0

    def step(self):
        self.last = self.latency(self.i)
        self.i += 1
        self.now += self.last / 1e3

    def clock(self):
        return self.now


class FakeTimer:
    def __init__(self, runner):
        self.runner = runner

    def time(self, fn):
        fn()
        return self.runner.last, self.runner.last + 0.005

    def synchronize(self):
        pass


def run(latency, **kw):
    r = FakeRunner(latency)
    out = measure(r.step, FakeTimer(r), MeasureSpec(**{"warmup_iters": 10, "warmup_max_iters": 10, "iters": 50, **kw}),
                  clock=r.clock)
    return r, out


def test_a_steady_runner_converges_and_stops_soon_after_min_iters():
    noise = np.random.default_rng(0).normal(0, 0.002, 100_000)
    r, out = run(lambda i: 1.0 + noise[i], max_time_s=60)
    assert out.converged and not out.hit_max_time
    assert 50 <= len(out.device_ms) <= 60  # the first check after iters already passes
    assert out.host_ms[0] == pytest.approx(out.device_ms[0] + 0.005)
    assert r.now < 0.1


def test_a_noisy_runner_samples_until_max_time_and_says_it_did_not_converge():
    noise = np.random.default_rng(0).lognormal(0, 1.0, 100_000)
    r, out = run(lambda i: noise[i], max_time_s=5, target_rel_ci=0.01)
    assert out.hit_max_time and not out.converged
    assert r.now >= 5 and 1000 < len(out.device_ms) < 20_000


def test_min_time_and_max_iters_bound_the_sampling():
    r, out = run(lambda i: 1.0, min_time_s=2.0)
    assert out.converged and 2.0 <= r.now - out.warmup_iters / 1e3 < 2.1
    noise = np.random.default_rng(0).lognormal(0, 1.0, 100_000)
    _, out = run(lambda i: noise[i], max_iters=500, max_time_s=1e9)
    assert len(out.device_ms) == 500 and not out.converged and not out.hit_max_time
    _, out = run(lambda i: noise[i], target_rel_ci=None, iters=30)
    assert len(out.device_ms) == 30 and out.converged


def test_warm_up_runs_windows_until_the_latency_is_steady():
    # a cold start decaying to 1 ms: the timed part must not see it
    r, out = run(lambda i: 1.0 + 4.0 * math.exp(-i / 10), warmup_max_iters=1000)
    assert 40 <= out.warmup_iters <= 100
    assert np.median(out.device_ms) == pytest.approx(1.0, rel=0.01)
    # never steady (window medians alternate): stops at the cap, and says how many it ran
    _, out = run(lambda i: 1.0 + (i // 10) % 2, warmup_max_iters=200)
    assert out.warmup_iters == 200
    # the time cap
    _, out = run(lambda i: 1.0 + (i // 10) % 2, warmup_max_iters=10_000, warmup_max_s=1.0)
    assert 600 <= out.warmup_iters <= 700
    # warmup_max_iters = warmup_iters (or left out): a fixed warm-up
    _, out = run(lambda i: 1.0 + 4.0 * math.exp(-i / 10), warmup_max_iters=10)
    assert out.warmup_iters == 10


def test_very_large_rows_use_the_order_statistic_interval():
    # the samples 1, 2, ..., n shuffled (n = 100,001): the k-th smallest is k. The order-statistic 95%
    # interval takes the ranks n/2 -+ 1.96 sqrt(n)/2 = 50,000.5 -+ 309.9, rounded outwards: the
    # 49,690th and the 50,312th smallest
    n = stats.BOOTSTRAP_MAX_N + 1
    a = np.random.default_rng(3).permutation(n) + 1.0
    s = stats.latency_stats(a, 1)
    assert (s["latency_ms_ci_low"], s["latency_ms_median"], s["latency_ms_ci_high"]) == (49_690.0, 50_001.0, 50_312.0)
