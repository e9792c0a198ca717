"""Summary statistics of one trial's samples.

- Percentiles use numpy's ``linear`` method (type 7 of Hyndman & Fan, the one spreadsheets use):
  the p-th percentile interpolates between the two nearest order statistics. ``p50`` is the median.
- ``std`` is the sample standard deviation (ddof=1); ``cv`` = std / mean.
- The 95% confidence interval of the median in the row is a percentile bootstrap: ``BOOTSTRAP_RESAMPLES``
  resamples drawn with a generator seeded by ``seed``, so the same samples give the same interval.
- The timing loop's stopping rule uses :func:`median_ci_distribution_free` instead: the classic
  order-statistic interval (binomial ranks), exact enough, and cheap enough to evaluate while sampling.
  Rows with more than ``BOOTSTRAP_MAX_N`` samples (many repeats of long runs) use it too, as the
  bootstrap would take minutes there and the two agree closely at such sizes.
- Outliers are counted with Tukey's fences: below Q1 - 1.5 IQR or above Q3 + 1.5 IQR.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from workers.row import Row

PERCENTILE_METHOD = "linear"
BOOTSTRAP_RESAMPLES = 1000
TUKEY_K = 1.5
BOOTSTRAP_MAX_N = 100_000
_Z95 = 1.959963984540054
# Bootstrap in chunks so that a 20,000-sample trial never allocates more than ~2M values at once.
_CHUNK_VALUES = 2_000_000


def bootstrap_median_ci(a: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap CI of the median of ``a``; seeded, so reproducible."""
    n = a.size
    if n == 1:
        return float(a[0]), float(a[0])
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples)
    chunk = max(1, _CHUNK_VALUES // n)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        medians[start:start + k] = np.median(a[idx], axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(medians, [100 * alpha, 100 * (1 - alpha)], method=PERCENTILE_METHOD)
    return float(lo), float(hi)


def median_ci_distribution_free(sorted_a: np.ndarray) -> tuple[float, float] | None:
    """95% CI of the median from order statistics (ranks n/2 -+ 1.96 sqrt(n)/2), of sorted samples.

    None when there are too few samples for an interval (n < 6).
    """
    n = sorted_a.size
    if n < 6:
        return None
    half = _Z95 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return float(sorted_a[lo]), float(sorted_a[hi])


def relative_ci(samples: Sequence[float] | np.ndarray) -> float:
    """Half-width of the distribution-free 95% CI of the median over the median (inf if unknown)."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    ci = median_ci_distribution_free(a)
    med = float(np.median(a)) if a.size else 0.0
    if ci is None or med <= 0:
        return math.inf
    return max(med - ci[0], ci[1] - med) / med


def latency_stats(samples_ms: Sequence[float], batch_size: int, seed: int = 0) -> Row:
    """Every latency column of a row (ms) and the throughput (samples/s, from the median)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p25, p50, p75, p90, p95, p99 = np.percentile(a, [25, 50, 75, 90, 95, 99], method=PERCENTILE_METHOD)
    iqr = p75 - p25
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    if a.size <= BOOTSTRAP_MAX_N:
        lo, hi = bootstrap_median_ci(a, seed)
    else:
        lo, hi = median_ci_distribution_free(np.sort(a))  # type: ignore[misc]
    outliers = int(((a < p25 - TUKEY_K * iqr) | (a > p75 + TUKEY_K * iqr)).sum())
    return {
        "latency_ms_median": float(p50),
        "latency_ms_mean": mean,
        "latency_ms_std": std,
        "latency_ms_cv": std / mean if mean > 0 else None,
        "latency_ms_iqr": float(iqr),
        "latency_ms_p50": float(p50),
        "latency_ms_p90": float(p90),
        "latency_ms_p95": float(p95),
        "latency_ms_p99": float(p99),
        "latency_ms_min": float(a.min()),
        "latency_ms_max": float(a.max()),
        "latency_ms_ci_low": lo,
        "latency_ms_ci_high": hi,
        "outliers": outliers,
        "throughput": float(batch_size * 1e3 / p50) if p50 > 0 else None,
    }


def median(samples: Sequence[float]) -> float:
    return float(np.median(np.asarray(samples, dtype=np.float64)))


def between_run_cv(medians: Sequence[float]) -> float | None:
    """Coefficient of variation (ddof=1) of per-repeat medians; None with a single repeat."""
    m = np.asarray(medians, dtype=np.float64)
    if m.size < 2 or m.mean() <= 0:
        return None
    return float(m.std(ddof=1) / m.mean())


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (p > 0.5): the CDF, a Simpson integral of the density, inverted by
    bisection (no scipy on the workers; 1e-6 is far finer than any interval needs)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 2001)
        y = c * (1 + x * x / df) ** (-(df + 1) / 2)
        h = t / 2000
        return 0.5 + h / 3 * float(y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2
