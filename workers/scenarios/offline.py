"""offline: every lane busy until the run has both its minimum requests and its minimum duration;
judged on throughput (samples/s); a generation trial's rows (k generations in flight) on tokens/s, then
the p99 time per output token. The policy: ``workers.scenarios._lanes``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import Figure, Interval, Judged, Row, Scenario

if TYPE_CHECKING:
    from workers.contract import Trial
    from workers.scenarios._session import Harness
    from workers.scenarios.base import Measured


def run_reasons(row: Row, trial: Trial) -> list[str]:
    """An offline or server run met min_requests and min_duration_s (it did not stop at max_time_s first)."""
    reasons = []
    n, window = row.get("requests") or 0, row.get("measured_s") or 0.0
    if n < trial.min_requests:
        reasons.append(f"too few requests: {n} < min_requests {trial.min_requests}")
    if window < trial.min_duration_s:
        reasons.append(f"too short: {window:.3g} s < min_duration_s {trial.min_duration_s:g} s")
    return reasons


class Offline(Scenario):
    name = "offline"
    order = 1
    fields = ("concurrency", "min_duration_s", "min_requests")
    figures = (Figure("throughput", "samples/s", "higher", samples="request_service_ms", statistic="mean"),)
    generation_figures = (Figure("tokens_per_s", "tokens/s", "higher", samples="request_service_ms", statistic="mean"),
                          Figure("tpot_ms_p99", "TPOT p99 ms", "lower", samples="tpot_samples_ms", statistic="p99"))
    curve_marker = "o"
    curve_labels_concurrency = True

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        from workers.scenarios import _lanes

        return _lanes.measure(h, _lanes.offline_run)

    @classmethod
    def reasons(cls, row: Row, trial: Trial) -> list[str]:
        return run_reasons(row, trial)

    @classmethod
    def judge(cls, figure: Figure, b: Row, c: Row, interval: Interval) -> Judged:
        """A rate's ratio (samples/s, tokens/s), its interval from the mean service time's (scaled to the
        ratio); any other figure as the base class judges it."""
        import numpy as np

        if figure.samples != "request_service_ms":
            return super().judge(figure, b, c, interval)
        sb = np.asarray(b["request_service_ms"], dtype=np.float64)
        sc = np.asarray(c["request_service_ms"], dtype=np.float64)
        ratio = float(b[figure.column] / c[figure.column])
        lo, hi = interval(sb, sc, np.mean)
        centre = float(sc.mean() / sb.mean())
        return ratio, lo * ratio / centre, hi * ratio / centre
