"""Summary statistics of one trial's samples.

Percentiles use numpy's default ``linear`` method (type 7 of Hyndman & Fan, the one
spreadsheets use): the p-th percentile interpolates between the two nearest order statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILE_METHOD = "linear"


def latency_stats(samples_ms: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Median, mean, p90, p99, min, max (ms) and throughput (samples/s, from the median)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99], method=PERCENTILE_METHOD)
    return {
        "latency_ms_median": float(p50),
        "latency_ms_mean": float(a.mean()),
        "latency_ms_p90": float(p90),
        "latency_ms_p99": float(p99),
        "latency_ms_min": float(a.min()),
        "latency_ms_max": float(a.max()),
        "throughput": float(batch_size * 1e3 / p50) if p50 > 0 else None,
    }
