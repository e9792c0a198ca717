"""One verdict per row: is this number one to act on?

A row can be ``ok`` (it ran, its output passed parity) and still not be a figure to decide by: it
did not converge, another process used the GPU while it was timed, it is too noisy, its repeats
disagree, or (a server scenario) the schedule was not kept. :func:`verdict` gives every row
``valid`` and ``invalid_reasons``; this module is the one place those rules live.

- ``valid`` is null for rows with no measurement (failed, skipped, timeout, ...).
- ``invalid_reasons`` is a list of short codes with their figures, e.g.
  ``"noisy: IQR/median 14.2% > 10%"``; empty when ``valid``.

Rules come in groups, each a function of the row (and the trial that made it):
``measurement_reasons`` (any scenario: convergence, contention, noise, repeats) and
``scenario_reasons`` (the load scenario's own rules, e.g. a server run's achieved rate).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from workers.row import Row

if TYPE_CHECKING:  # pragma: no cover
    from workers.contract import Trial

COLUMNS = ("valid", "invalid_reasons")

#: Thresholds of the measurement rules (docs/measuring.md#validity says why each is where it is).
#: noisy: IQR / median above this (torch.utils.benchmark warns at the same 10%)
MAX_REL_IQR = 0.10
#: repeats disagree: the range of the repeats' medians over their median above this, and larger than
#: the repeats' own 95% intervals of the median allow (the two extreme repeats' half-widths summed)
MAX_REPEAT_SPREAD = 0.01
#: too few samples: below this there is no confidence interval of the median (order statistics)
MIN_SAMPLES = 6


def _spread_rules(row: Row, trial: Trial | None) -> bool:
    """Whether the spread rules judge the row: its scenario's ``spread_rules`` (one query at a time).
    A load scenario's latencies include queueing, whose spread is its own business (``scenario_reasons``)."""
    from workers import scenarios

    return scenarios.of(row if row.get("scenario") or trial is None else trial).spread_rules


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _not_converged(row: Row, trial: Trial | None) -> str | None:
    if row.get("converged") is not False:
        return None
    from workers.measure.stats import relative_ci  # numpy: only where rows are judged

    spec = getattr(trial, "measure", None)
    target = getattr(spec, "target_rel_ci", None)
    if row.get("hit_max_time"):
        bound = f"max_time_s {spec.max_time_s:g} s" if spec is not None else "max_time_s"
    else:
        bound = f"max_iters {spec.max_iters}" if spec is not None else "max_iters"

    rel = relative_ci(row.get("samples_ms") or [])
    got = f"95% CI of the median +-{_pct(rel)}" if math.isfinite(rel) else "too few samples for a 95% CI"
    want = f" > target {_pct(target)}" if target and math.isfinite(rel) else ""
    return f"not converged: {got}{want} when {bound} stopped it ({row.get('iters')} iterations)"


def _contended(row: Row) -> str | None:
    if not row.get("contended"):
        return None
    pids = row.get("gpu_other_pids") or []
    who = f"pid {', '.join(map(str, pids[:5]))}{' ...' if len(pids) > 5 else ''}" if pids else "another process"
    return f"contended: {who} also on the GPU during timing"


def _noisy(row: Row) -> str | None:
    iqr, med = row.get("latency_ms_iqr"), row.get("latency_ms_median")
    if iqr is None or not med or med <= 0:
        return None
    rel = iqr / med
    return f"noisy: IQR/median {_pct(rel)} > {_pct(MAX_REL_IQR)}" if rel > MAX_REL_IQR else None


def _too_few(row: Row) -> str | None:
    n = row.get("iters")
    if n is None or n >= MIN_SAMPLES:
        return None
    return f"too few samples: {n} < {MIN_SAMPLES}, no confidence interval of the median"


def repeats_disagree(medians: list[float], rel_cis: list[float] | None) -> str | None:
    """The repeats' medians move more than each repeat's own interval allows (and by more than
    ``MAX_REPEAT_SPREAD``): the between-run noise is larger than the within-run noise, so the row's
    interval (from the pooled samples) understates how far another run would land."""
    if len(medians) < 2:
        return None
    center = statistics.median(medians)
    if center <= 0:
        return None
    lo_i = min(range(len(medians)), key=medians.__getitem__)
    hi_i = max(range(len(medians)), key=medians.__getitem__)
    spread = (medians[hi_i] - medians[lo_i]) / center
    if spread <= MAX_REPEAT_SPREAD:
        return None
    within = ""
    if rel_cis and len(rel_cis) == len(medians):
        h_lo, h_hi = rel_cis[lo_i], rel_cis[hi_i]
        if h_lo is None or h_hi is None or not math.isfinite(h_lo) or not math.isfinite(h_hi):
            return None  # a repeat too short for an interval: nothing to hold the spread against
        allowed = h_lo * medians[lo_i] + h_hi * medians[hi_i]
        if medians[hi_i] - medians[lo_i] <= allowed:
            return None  # the intervals overlap: the repeats agree within their own noise
        within = f", each repeat's own 95% CI +-{_pct(max(h_lo, h_hi))}"
    return (f"repeats disagree: medians {min(medians):.4g}-{max(medians):.4g} ms, a spread of {_pct(spread)} "
            f"> {_pct(MAX_REPEAT_SPREAD)}{within}")


def measurement_reasons(row: Row, trial: Trial | None = None) -> list[str]:
    """Why the timing itself can't be trusted: another process on the GPU (any scenario); and for
    single-stream latency rows: not converged, noisy, repeats that disagree, too few samples."""
    reasons = [_contended(row)]
    if _spread_rules(row, trial):
        from workers.measure.pool import faster_repeated

        reasons += [_not_converged(row, trial), _too_few(row), _noisy(row),
                    repeats_disagree(list(row.get("repeat_medians_ms") or []), row.get("repeat_rel_ci")),
                    faster_repeated(row)]
    return [r for r in reasons if r]


def queueing(row: Row) -> bool:
    """True for rows of a load scenario with requests in flight (offline, server, find-peak): their
    latency spread is queueing by nature, not noise, so spread-based rules (noisy, CI of the median
    not met, between-repeat CV) must not judge them. Rows of runs older than scenarios: single-stream."""
    return not _spread_rules(row, None)


def scenario_reasons(row: Row, trial: Trial) -> list[str]:
    """Why the load scenario's own conditions were not met (``Scenario.reasons``; the default
    scenario has none). Queueing spread is never a reason here."""
    from workers import scenarios

    return scenarios.of(row).reasons(row, trial)


def verdict(row: Row, trial: Trial) -> Row:
    """The row's ``valid`` and ``invalid_reasons`` columns."""
    if row.get("status") != "ok":
        return dict.fromkeys(COLUMNS)
    reasons = measurement_reasons(row, trial) + scenario_reasons(row, trial)
    return {"valid": not reasons, "invalid_reasons": reasons}
