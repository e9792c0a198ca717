"""One row from a trial measured in several fresh processes (``measure.process_repeats``; the processes
themselves are started by ``workers.processes``).

A launch-bound loop's speed is a property of its process (where its threads, pages and CPU clocks
land): two processes of the same code differ by more than one process's samples show. So the row's
interval of the median includes the spread between the processes' medians, as pyperf's does::

    m            = median of every process's samples pooled           # latency_ms_median
    lo_w, hi_w   = bootstrap interval of that median (within-process noise, as any row's)
    s            = SD (ddof=1) of log(process median)                 # ~ process_cv
    b            = t(0.975, N - 1) * s / sqrt(N)                      # the between-process part: the
                                                                      #   standard error of a mean of N
    ci           = m * exp(-+ sqrt(log(m / lo_w)^2 + b^2))            # both parts, in log space

Student's t (not z) because N is small: two or three processes tell little about their spread, and
the interval says so. ``compare`` judges such a row by the same between-process part
(:func:`between_process_noise`), not by a fixed floor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from workers.contract import Trial
from workers.measure import envinfo, memory, stats, validity
from workers.row import Row

#: the normal 97.5% quantile, which compare's widening multiplies a row's noise back by
_Z975 = statistics.NormalDist().inv_cdf(0.975)


def between_part(medians: Sequence[float]) -> float | None:
    """``b`` of the module's doc: the between-process half-width of the row's median, in log space;
    None below two processes (or with a median that is not positive)."""
    m = np.asarray(medians, dtype=np.float64)
    if m.size < 2 or (m <= 0).any():
        return None
    return stats.t_quantile(0.975, m.size - 1) * float(np.log(m).std(ddof=1)) / math.sqrt(m.size)


def widened_ci(median: float, lo: float, hi: float, medians: Sequence[float]) -> tuple[float, float]:
    """The interval ``lo``-``hi`` of ``median`` (within-process) with the between-process part added."""
    b = between_part(medians)
    if b is None or median <= 0 or lo <= 0:
        return lo, hi
    return (median * math.exp(-math.hypot(math.log(median / lo), b)),
            median * math.exp(math.hypot(math.log(hi / median), b)))


def between_process_noise(row: Row) -> float | None:
    """The relative SD of this row's median from run to run, from its own processes: ``b`` / z, so
    that ``compare``'s z-based widening by it gives back the row's t-based between-process part.
    None for a row measured in one process."""
    medians = row.get("process_medians_ms") or []
    b = between_part(medians)
    return None if b is None else b / _Z975


def merge(rows: list[Row], pids: list[int], trial: Trial) -> Row:
    """One row from each process's own ``ok`` row of the same trial (in the order they ran): every
    sample pooled, the statistics again over them, the interval with the between-process part; the
    repeats' columns over every process's repeats; the first process's setup and copies, the last's
    energy, profile and end states; the validity rules each where it applies (:func:`_validity`)."""
    first, last = rows[0], rows[-1]
    samples = [x for r in rows for x in r["samples_ms"]]
    host = [x for r in rows for x in r.get("host_samples_ms") or []]
    medians = [stats.median(r["samples_ms"]) for r in rows]
    lat = stats.latency_stats(samples, trial.batch_size, seed=trial.seed)
    lat["latency_ms_ci_low"], lat["latency_ms_ci_high"] = widened_ci(
        lat["latency_ms_median"], lat["latency_ms_ci_low"], lat["latency_ms_ci_high"], medians)
    host_median = stats.median(host) if host else None
    repeat_medians = [x for r in rows for x in r.get("repeat_medians_ms") or []]
    n = len(rows)
    out: Row = {**last, **{k: first.get(k) for k in ("setup_s", "copy_in_ms", "copy_out_ms", "started_at",
                                                         "gpu_mem_used_before_bytes")}}
    out.update(lat)
    out.update(
        samples_ms=samples, host_samples_ms=host or None, iters=len(samples), host_ms_median=host_median,
        launch_overhead_ms=None if host_median is None else host_median - lat["latency_ms_median"],
        warmup_iters=sum(r.get("warmup_iters") or 0 for r in rows),
        warmup_s=sum(r.get("warmup_s") or 0.0 for r in rows), timed_s=sum(r.get("timed_s") or 0.0 for r in rows),
        hit_max_time=any(r.get("hit_max_time") for r in rows), converged=all(r.get("converged") for r in rows),
        repeats=sum(r.get("repeats") or 1 for r in rows), repeat_medians_ms=repeat_medians,
        repeat_cv=stats.between_run_cv(repeat_medians),
        repeat_rel_ci=[x for r in rows for x in r.get("repeat_rel_ci") or []],
        gpu_mem_peak_bytes=max((r["gpu_mem_peak_bytes"] for r in rows if r.get("gpu_mem_peak_bytes") is not None),
                               default=None),
        parity_s=sum(r.get("parity_s") or 0.0 for r in rows),
        process_repeats=n, process_pids=list(pids), process_medians_ms=medians,
        process_cv=stats.between_run_cv(medians),
        **memory.merge([{k: r.get(k) for k in memory.COLUMNS} for r in rows]),
        **envinfo.merge_watches([{k: r.get(k) for k in envinfo.GPU_COLUMNS} for r in rows]),
    )
    for k in ("parity_max_abs_err", "parity_max_rel_err", "host_rss_peak_bytes"):  # the worst process's
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = max(vals) if vals else None
    out.update(_validity(rows, out, trial))
    return out


def _validity(rows: list[Row], merged: Row, trial: Trial) -> Row:
    """The validity rules (``workers.measure.validity``), each where it means something: a timing loop's
    own spread (noisy, not converged, repeats that disagree, faster on a repeated input) in each process,
    the reason saying which; the sample count and another process on the GPU on the merged row. The
    spread *between* the processes is no reason: the row's interval holds it."""
    n = len(rows)
    own = [f"process {i} of {n}: {why}" for i, r in enumerate(rows, 1) for why in _own_reasons(r, trial)]
    pooled = {**merged, "converged": None, "latency_ms_iqr": None, "repeat_medians_ms": None, "repeat_speedup": None}
    reasons = validity.measurement_reasons(pooled, trial) + validity.scenario_reasons(merged, trial) + own
    return {"valid": not reasons, "invalid_reasons": reasons}


def _own_reasons(row: Row, trial: Trial) -> list[str]:
    """One process's reasons about its own loop: all of them but contention and its sample count alone
    (what a row with only that count is told), which the merged row answers."""
    count = set(validity.measurement_reasons({"iters": row.get("iters")}, trial))
    return [r for r in validity.measurement_reasons({**row, "contended": None}, trial) if r not in count]
