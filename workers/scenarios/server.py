"""server: requests at seeded arrival times (Poisson or constant) at a target rate, FIFO, served by
the first free lane; latency counts from the scheduled arrival. Judged on the p99 latency; a generation
trial's rows on the p99 time to first token (from the scheduled arrival) and the p99 time per output
token. The policy: ``workers.scenarios._lanes``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import Figure, Row, Scenario, Settings
from workers.scenarios.offline import run_reasons

if TYPE_CHECKING:
    from workers.contract import Trial
    from workers.scenarios._session import Harness
    from workers.scenarios.base import Measured

#: The server kept up: its achieved rate within this of the generated schedule's own rate.
RATE_TOL = 0.01


class Server(Scenario):
    name = "server"
    order = 2
    fields = ("concurrency", "rate", "arrival", "latency_bound_ms", "tpot_bound_ms", "min_duration_s", "min_requests")
    figures = (Figure("latency_ms_p99", "p99 ms", "lower", samples="samples_ms", statistic="p99"),)
    generation_figures = (Figure("ttft_ms_p99", "TTFT p99 ms", "lower", samples="ttft_samples_ms", statistic="p99"),
                          Figure("tpot_ms_p99", "TPOT p99 ms", "lower", samples="tpot_samples_ms", statistic="p99"))

    @classmethod
    def check(cls, settings: Settings, max_time_s: float) -> str | None:
        if not settings["rates"]:
            return ("the server scenario needs rates (requests/s), e.g. "
                    "scenario: {name: server, rates: [100, 200]} or matrix.rates")
        n = settings["min_requests"]
        slowest = min(settings["rates"])
        if n / slowest > max_time_s:
            return (f"at {slowest:g} requests/s, min_requests {n} take {n / slowest:g} s, more than "
                    f"measure.max_time_s ({max_time_s:g} s); raise max_time_s or lower min_requests")
        return super().check(settings, max_time_s)

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        from workers.scenarios import _lanes

        return _lanes.measure(h, _lanes.server_run)

    @classmethod
    def reasons(cls, row: Row, trial: Trial) -> list[str]:
        """The run's minimums; every scheduled request served, at an achieved rate within RATE_TOL of
        the generated schedule's own rate (not the nominal target: a finite Poisson schedule is rarely
        on it); p99 within latency_bound_ms where one is given (a generation trial's: its TTFT p99, and
        its TPOT p99 within tpot_bound_ms)."""
        reasons = run_reasons(row, trial)
        n = row.get("requests") or 0
        own, got = row.get("schedule_rate"), row.get("achieved_rate")
        if own is None:
            reasons.append(f"schedule not kept: {n} request(s) served before max_time_s, not the whole schedule")
        elif got is None or abs(got / own - 1) > RATE_TOL:
            reasons.append(f"schedule not kept: achieved {got or 0:.4g}/s vs the schedule's {own:.4g}/s "
                           f"(more than {RATE_TOL:.0%} apart)")
        gen = row.get("ttft_ms_p99") is not None
        bound, p99 = trial.latency_bound_ms, row.get("ttft_ms_p99" if gen else "latency_ms_p99")
        if bound is not None and p99 is not None and p99 > bound:
            reasons.append(f"over the bound: {'TTFT ' if gen else ''}p99 {p99:.3g} ms > latency_bound_ms {bound:g}")
        bound, p99 = getattr(trial, "tpot_bound_ms", None), row.get("tpot_ms_p99")
        if gen and bound is not None and p99 is not None and p99 > bound:
            reasons.append(f"over the bound: TPOT p99 {p99:.3g} ms > tpot_bound_ms {bound:g}")
        return reasons

    @classmethod
    def curve_label(cls, row: Row, axes: str = "") -> str:
        return f"{row['label']} ({row['io']}, {axes + ', ' if axes else ''}{cls.name} c={row['concurrency']})"
