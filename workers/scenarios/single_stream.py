"""single-stream: one request at a time, the next when it is done (the default scenario).

Its timing policy is ``workers.measure.timing``'s; its trials are repeated (``measure.repeats``), each
repeat a fresh runner. Judged on the median latency, with the spread rules of ``workers.measure.validity``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import DEFAULT, Figure, Scenario

if TYPE_CHECKING:
    from workers.scenarios._session import Harness
    from workers.scenarios.base import Measured


class SingleStream(Scenario):
    name = DEFAULT
    order = 0
    uses_lanes = False
    figures = (Figure("latency_ms_median", "median ms", "lower", samples="samples_ms"),)
    spread_rules = True
    report = "latency"

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        from workers.scenarios import _repeats

        return _repeats.measure(h)
