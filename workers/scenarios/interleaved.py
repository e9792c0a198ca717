"""interleaved: the arms of one unit (``measure.interleave``) timed one request at a time, in
alternating rounds in one worker process (``workers/scenarios/_interleave.py`` is its policy).

A plan does not name it (the names a plan may write leave it out): its trials are the single-stream
trials of a plan with ``measure.interleave``, which ``orchestrator.plan.interleave`` gives this scenario (and an arm) so
their ids are their own and ``compare`` never matches them with ordinary rows. Judged within the
run on the paired ratio of per-round medians (``ab_ratio``, ``workers.measure.paired``); across
runs, like single-stream rows, on the median latency."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import Figure, Scenario

if TYPE_CHECKING:
    from workers.row import Row
    from workers.scenarios._session import Harness
    from workers.scenarios.base import Measured


class Interleaved(Scenario):
    name = "interleaved"
    order = 50
    uses_lanes = False
    interleaves = True
    figures = (Figure("latency_ms_median", "median ms", "lower", samples="samples_ms"),)
    spread_rules = True
    report = "table"

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        from workers.scenarios import _interleave

        return _interleave.measure(h)

    @classmethod
    def tag(cls, row: Row) -> str:
        return f"interleaved {row.get('arm') or row.get('label')}"
