"""Budgets: limits a plan sets on a trial's results (``max_latency_ms``, ``max_p99_ms``,
``min_throughput``). Checked on the driver, from the row, after the trial ran; a trial that is
not ``ok`` has no numbers to check (its status already says what went wrong).

A row that is ``ok`` but not ``valid`` (workers/measure/validity.py: it did not converge, was noisy, shared
its GPU, ...) is still checked, and every verdict on it says so: a miss names the row's reasons,
and :func:`on_invalid` lists the budgets that were judged (met or missed) on such a row.
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.contract import BudgetLimits, Status, Trial
from workers.row import Row

#: limit -> (row column, what it measures, unit, True when the value must stay at or below it)
CHECKS = {
    "max_latency_ms": ("latency_ms_median", "median latency", "ms", True),
    "max_p99_ms": ("latency_ms_p99", "p99 latency", "ms", True),
    "min_throughput": ("throughput", "throughput", "samples/s", False),
}


def missed(row: Row, budgets: Sequence[BudgetLimits]) -> list[str]:
    """One message per limit of ``budgets`` (from the trial) that ``row`` misses."""
    if row.get("status") != Status.OK:
        return []
    caveat = f"; judged on an invalid row ({invalid_text(row)})" if row.get("valid") is False else ""
    out = []
    for budget in budgets:
        for limit, (column, what, unit, at_most) in CHECKS.items():
            if budget.get(limit) is None:
                continue
            value, bound, where = row.get(column), budget[limit], budget.get("where", "budgets")
            if value is None:
                out.append(f"{what} is missing, so {limit} {bound:g} can't be met ({where}){caveat}")
            elif value > bound if at_most else value < bound:
                relation = "above" if at_most else "below"
                out.append(f"{what} {value:.4g} {unit} is {relation} {limit} {bound:g} ({where}){caveat}")
    return out


def invalid_text(row: Row) -> str:
    return "; ".join(row.get("invalid_reasons") or []) or "invalid"


def on_invalid(trials: list[Trial], rows: list[Row]) -> list[tuple[Row, str]]:
    """(row, message) for each ok but invalid row that a budget of its trial was judged on."""
    budgets = {t.trial_id: t.budgets for t in trials}
    out = []
    for r in rows:
        limits = [f"{k} {b[k]:g}" for b in budgets.get(r["trial_id"], ()) for k in CHECKS if b.get(k) is not None]
        if limits and r.get("status") == Status.OK and r.get("valid") is False:
            out.append((r, f"{', '.join(limits)} judged on an invalid row ({invalid_text(r)}): "
                           f"{'missed' if missed(r, budgets[r['trial_id']]) else 'met'}, but not a number to act on"))
    return out


def misses(trials: list[Trial], rows: list[Row]) -> list[tuple[Row, list[str]]]:
    """(row, messages) for each ok row that misses a budget of its trial."""
    budgets = {t.trial_id: t.budgets for t in trials}
    found = [(r, missed(r, budgets.get(r["trial_id"], ()))) for r in rows]
    return [(r, m) for r, m in found if m]
