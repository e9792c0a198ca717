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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from workers.contract import Trial

COLUMNS = ("valid", "invalid_reasons")


def measurement_reasons(row: dict[str, Any], trial: Trial) -> list[str]:
    """Why the timing itself can't be trusted, whatever the scenario."""
    return []


def queueing(row: dict[str, Any]) -> bool:
    """True for rows of a load scenario with requests in flight (offline, server, find-peak): their
    latency spread is queueing by nature, not noise, so spread-based rules (noisy, CI of the median
    not met, between-repeat CV) must not judge them. Rows of runs older than scenarios: single-stream."""
    return (row.get("scenario") or "single-stream") != "single-stream"


#: A server run kept its schedule when its achieved rate is within this of the schedule's own rate.
RATE_TOL = 0.01


def scenario_reasons(row: dict[str, Any], trial: Trial) -> list[str]:
    """Why the load scenario's own conditions were not met (single-stream has none).

    - offline, server: the run met min_requests and min_duration_s (it did not stop at max_time_s
      first); server: every scheduled request was served, at an achieved rate within 1% of the
      generated schedule's own rate (not the nominal target: a finite Poisson schedule is rarely
      on it), and p99 within latency_bound_ms where one is given;
    - find-peak: some rate met the bound (``peak_rate`` set).
    Queueing spread is never a reason here."""
    scenario = row.get("scenario") or "single-stream"
    if scenario == "single-stream":
        return []
    reasons: list[str] = []
    if scenario == "find-peak":
        if row.get("peak_rate") is None:
            tried = row.get("probe_rates") or []
            reasons.append(f"no peak: none of the {len(tried)} rate(s) tried met p99 <= {trial.latency_bound_ms:g} ms"
                           if tried else "no peak: no server run fitted in measure.max_time_s")
        return reasons
    n, window = row.get("requests") or 0, row.get("measured_s") or 0.0
    if n < trial.min_requests:
        reasons.append(f"too few requests: {n} < min_requests {trial.min_requests}")
    if window < trial.min_duration_s:
        reasons.append(f"too short: {window:.3g} s < min_duration_s {trial.min_duration_s:g} s")
    if scenario == "server":
        own, got = row.get("schedule_rate"), row.get("achieved_rate")
        if own is None:
            reasons.append(f"schedule not kept: {n} request(s) served before max_time_s, not the whole schedule")
        elif got is None or abs(got / own - 1) > RATE_TOL:
            reasons.append(f"schedule not kept: achieved {got or 0:.4g}/s vs the schedule's {own:.4g}/s "
                           f"(more than {RATE_TOL:.0%} apart)")
        bound, p99 = trial.latency_bound_ms, row.get("latency_ms_p99")
        if bound is not None and p99 is not None and p99 > bound:
            reasons.append(f"over the bound: p99 {p99:.3g} ms > latency_bound_ms {bound:g}")
    return reasons


def verdict(row: dict[str, Any], trial: Trial) -> dict[str, Any]:
    """The row's ``valid`` and ``invalid_reasons`` columns."""
    if row.get("status") != "ok":
        return dict.fromkeys(COLUMNS)
    # LEAD, at merge: measurement_reasons' spread rules (noise, CI of the median, repeat CV) must skip
    # rows where queueing(row) is true: their spread is queueing (e.g. `if not queueing(row): ...noise
    # rules...`); contention and the other non-spread rules still apply to them.
    reasons = measurement_reasons(row, trial) + scenario_reasons(row, trial)
    return {"valid": not reasons, "invalid_reasons": reasons}
