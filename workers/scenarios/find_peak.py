"""find-peak: the highest arrival rate whose p99 latency stays within a bound, by bisection between
server runs (``workers.scenarios._peak.find_peak``); a generation trial's, whose p99 time to first
token stays within ``latency_bound_ms`` and p99 time per output token within ``tpot_bound_ms``. Judged
on the peak rate; its interval is the bisection's bracket. With ``confident: true``, each probe is
judged on the p99's upper confidence bound rather than the point estimate (``workers.measure.p99bound``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import Figure, Interval, Judged, Row, Scenario, Settings

if TYPE_CHECKING:
    from workers.contract import Trial
    from workers.scenarios._session import Harness
    from workers.scenarios.base import Measured


class FindPeak(Scenario):
    name = "find-peak"
    order = 3
    fields = ("concurrency", "arrival", "latency_bound_ms", "tpot_bound_ms", "min_duration_s", "min_requests",
              "confident")
    figures = (Figure("peak_rate", "peak req/s", "higher"),)
    widen_by_noise = False  # its brackets are its interval
    report = "peak"

    @classmethod
    def check(cls, settings: Settings, max_time_s: float) -> str | None:
        if not settings["latency_bound_ms"]:
            return ("find-peak needs latency_bound_ms: the p99 bound the peak rate must meet, "
                    "e.g. scenario: {name: find-peak, latency_bound_ms: 5}")
        return super().check(settings, max_time_s)

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        import functools

        from workers.scenarios import _lanes, _peak
        from workers.scenarios.server import RATE_TOL

        return _lanes.measure(h, functools.partial(_peak.find_peak, rate_tol=RATE_TOL))

    @classmethod
    def reasons(cls, row: Row, trial: Trial) -> list[str]:
        """Some rate met the bound (``peak_rate`` set)."""
        if row.get("peak_rate") is not None:
            return []
        tried = row.get("probe_rates") or []
        if (row.get("probe_verdicts") or [None])[-1] == "undecided":
            return [f"no peak: the last of {len(tried)} rate(s) tried could not be decided with confidence within "
                    "measure.max_time_s; give the trial more time"]
        if not tried:
            return ["no peak: no server run fitted in measure.max_time_s"]
        tpot = getattr(trial, "tpot_bound_ms", None)
        met = (f"TTFT p99 <= {trial.latency_bound_ms:g} ms" + (f" and TPOT p99 <= {tpot:g} ms" if tpot else "")
               if row.get("new_tokens") else f"p99 <= {trial.latency_bound_ms:g} ms")
        return [f"no peak: none of the {len(tried)} rate(s) tried met {met}"]

    @classmethod
    def judge(cls, figure: Figure, b: Row, c: Row, interval: Interval) -> Judged:
        """base peak / candidate peak, and the range the bisection brackets allow for it: each true peak
        lies in [peak_rate, peak_rate_fail] (no failing rate tried: up to infinity)."""
        pb, pc = b.get("peak_rate"), c.get("peak_rate")
        if pb is None and pc is None:
            return None, None, None
        if pc is None:
            return float("inf"), float("inf"), float("inf")  # the candidate met the bound at no rate
        if pb is None:
            return 0.0, 0.0, 0.0
        fb, fc = b.get("peak_rate_fail") or float("inf"), c.get("peak_rate_fail") or float("inf")
        return float(pb / pc), float(pb / fc), float(fb / pc)
