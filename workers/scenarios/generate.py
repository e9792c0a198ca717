"""generate: a request is a generation -- a prompt (prefill), then ``new_tokens`` greedy decode steps
with a KV cache -- one at a time (``workers.generation``; docs/measuring.md#generation).

Its trials are ``hf-causal`` models with ``prompt_len`` and ``new_tokens``; each backend drives its
generation path (``Runner.generation_path``) with its own runners, timing and parity, so the worker
neither sets up the backend's single-pass runner nor checks single-pass parity for it (``own_runners``).
Judged on the time per output token (the decode steps in ``samples_ms``) and the time to first
token; the spread rules of single-stream latency apply to the decode steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.scenarios.base import Figure, Measured, Row, Scenario

if TYPE_CHECKING:
    from workers.scenarios._session import Harness


class Generate(Scenario):
    name = "generate"
    order = 4
    uses_lanes = False
    own_runners = True
    figures = (Figure("tpot_ms", "TPOT ms", "lower", samples="samples_ms"),
               Figure("ttft_ms", "TTFT ms", "lower", samples="ttft_samples_ms"))
    spread_rules = True
    report = "table"

    @classmethod
    def measure(cls, h: Harness) -> Measured:  # type: ignore[override]
        from workers.generation.trial import measure

        return Measured(measure(h.trial, "cuda" if h.on_gpu else "cpu", h.runner_cls), [])

    @classmethod
    def tag(cls, row: Row) -> str:
        return f"generate {row.get('prompt_len')}+{row.get('new_tokens')}"
