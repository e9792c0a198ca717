"""``report``'s deployment answers, in each of its forms: the sizing table (``sizing``) and the Pareto
front (``pareto``), and for generation rows both in output tokens (``tokens``), as terminal tables, as
JSON (``report --format json``) and as HTML sections.

``Ask`` is what the user asked for (``--target-rate``, ``--target-tokens``, ``--headroom``, ``--price``,
``--sort``), checked before anything is read; the plan's ``prices:`` fill in the accelerators
``--price`` doesn't name.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from orchestrator.answers import pareto, sizing, tokens
from orchestrator.errors import InputError
from workers.row import Row


@dataclass
class Ask:
    target: float | None = None
    headroom: float = 0.0
    prices: dict[str, float] = field(default_factory=dict)
    sort: sizing.Sort = "gpus"
    target_tokens: float | None = None  # output tokens/s: GPUs for generation rows

    @classmethod
    def from_options(cls, target: float | None, headroom: float, price: list[str] | None, sort: str,
                     target_tokens: float | None = None) -> Ask:
        """The command line's options, checked (InputError naming the option)."""
        for option, value, unit in (("--target-rate", target, "requests/s"),
                                    ("--target-tokens", target_tokens, "output tokens/s")):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"{option} {value:g}: must be more than 0 {unit} (and finite)")
        if not 0 <= headroom < 100:
            raise InputError(f"--headroom {headroom:g}: must be at least 0 (0.2 = 20% above the target) and under 100")
        if sort not in sizing.SORTS:
            raise InputError(f"--sort {sort}: expected one of {', '.join(sizing.SORTS)}")
        return cls(target, headroom, sizing.parse_prices(price or []), sort, target_tokens)  # type: ignore[arg-type]

    def with_plan(self, run_dir: str | Path) -> Ask:
        """The plan's ``prices:`` under the command line's (``--price`` wins for the same key)."""
        import yaml

        from orchestrator.results.read import run_info

        text = run_info(run_dir).get("plan_yaml")
        plan = yaml.safe_load(text) if text else None
        found = plan.get("prices") if isinstance(plan, dict) else None
        if found:
            self.prices = {**sizing.check_prices(found, "the plan's prices"), **self.prices}
        return self


@dataclass
class Answers:
    """The sizing lines and the Pareto front, of single-pass rows and of generation rows (in tokens)."""

    lines: list[sizing.Sized]
    front: list[pareto.Point]
    gen_lines: list[tokens.TokenSized]
    gen_front: list[pareto.Point]


def answers(rows: list[Row], ask: Ask) -> Answers:
    """Every answer the report gives for ``ask``; InputError where a target has no peak rates to size
    with (a request rate: single-pass or generation ones; output tokens: generation ones), or a price
    matches no GPU of the run."""
    lines = sizing.size(rows, ask.target, ask.headroom, ask.prices, ask.sort)
    gen = tokens.size(rows, ask.target, ask.target_tokens, ask.headroom, ask.prices, ask.sort)
    if ask.target is not None and not lines and not gen:
        raise sizing.no_peaks("--target-rate", ask.target)
    if ask.target_tokens is not None and not gen:
        raise sizing.no_peaks("--target-tokens", ask.target_tokens, "generation ")
    return Answers(lines, pareto.front(rows), gen, tokens.front(rows))


def _title(ask: Ask, generation: bool = False) -> str:
    if generation:
        parts = ["Sizing generation: the most output tokens/s per GPU within the TTFT and TPOT p99 bounds"]
        target = (f"{ask.target_tokens:g} output tokens/s" if ask.target_tokens is not None
                  else f"{ask.target:g} requests/s" if ask.target is not None else None)
    else:
        parts = ["Sizing: the most requests/s per GPU within the p99 bound"]
        target = f"{ask.target:g} requests/s" if ask.target is not None else None
    if target is not None:
        room = f" + {ask.headroom:.0%} headroom" if ask.headroom else ""
        parts.append(f"GPUs for {target}{room}")
    if ask.prices:
        parts.append("prices " + ", ".join(f"{k} {v:g} USD/GPU-h" for k, v in ask.prices.items()))
    return "; ".join(parts) + f" (sorted by {ask.sort}; * best per group)"


def _table(title: str, cols: tuple[str, ...], lines: list[list[str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in cols:
        text = col in ("model", "dtype", "configuration", "GPU", "measured")
        t.add_column(col, justify="left" if text else "right")
    for cells in lines:
        t.add_row(*cells)
    return t


def terminal(rows: list[Row], ask: Ask) -> tuple[list[Table], list[str]]:
    """The sizing and Pareto tables for the terminal (none where the run has no such rows), and the lines
    naming where the cheapest and the fastest differ."""
    a = answers(rows, ask)
    tables = []
    if a.lines:
        tables.append(_table(_title(ask), sizing.COLUMNS, [sizing.cells(s) for s in a.lines]))
    if a.front:
        tables.append(_table("Pareto front: throughput per GPU against p99 latency (no other point of the model "
                             "and dtype serves more at a lower p99)", pareto.COLUMNS,
                             [pareto.cells(p) for p in a.front]))
    if a.gen_lines:
        tables.append(_table(_title(ask, generation=True), tokens.COLUMNS, [tokens.cells(s) for s in a.gen_lines]))
    if a.gen_front:
        tables.append(_table("Pareto front of generation: output tokens/s per GPU against p99 time per output "
                             "token (no other point of the model, shape and dtype serves more at a lower TPOT p99)",
                             tokens.FRONT_COLUMNS, [pareto.cells(p) for p in a.gen_front]))
    return tables, sizing.differences(a.lines) + tokens.differences(a.gen_lines)


def as_json(rows: list[Row], ask: Ask) -> dict[str, Any]:
    """The report as data: every trial's main figures, the sizing lines and the Pareto front, and the
    same of generation rows in tokens."""
    a = answers(rows, ask)
    keep = ("trial_id", "model", "label", "backend", "batch_size", "dtype", "io", "scenario", "concurrency",
            "target_rate", "latency_bound_ms", "status", "valid", "latency_ms_median", "latency_ms_p99",
            "latency_ms_p99_upper", "throughput", "peak_rate", "peak_rate_fail", "energy_j_per_request",
            "device_name", "node_trials_busy_max", "prompt_len", "new_tokens", "tpot_bound_ms", "ttft_ms_p99",
            "tpot_ms_p99", "tokens_per_s")
    return {"ask": {"target_rate": ask.target, "target_tokens": ask.target_tokens, "headroom": ask.headroom,
                    "prices": ask.prices, "sort": ask.sort},
            "trials": [{k: r.get(k) for k in keep} for r in rows],
            "sizing": [s.as_json() for s in a.lines], "sizing_notes": sizing.differences(a.lines),
            "pareto": [p.as_json() for p in a.front],
            "generation_sizing": [s.as_json() for s in a.gen_lines],
            "generation_sizing_notes": tokens.differences(a.gen_lines),
            "generation_pareto": [tokens.front_json(p) for p in a.gen_front]}


def json_text(rows: list[Row], ask: Ask) -> str:
    import json

    return json.dumps(as_json(rows, ask), indent=1, default=str)


def html_sections(rows: list[Row], ask: Ask) -> str:
    """The sizing tables and the Pareto fronts (tables and plots) as HTML; empty without load rows."""
    a = answers(rows, ask)
    parts = []
    if a.lines:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in sizing.differences(a.lines))
        parts.append(f"<h2>Sizing</h2><p>{html.escape(_title(ask))}. The bracket is where the true peak lies; "
                     "<i>measured</i> says whether the figure was taken with the node's other GPUs busy.</p>"
                     + pareto.html_table(sizing.COLUMNS, [sizing.cells(s) for s in a.lines], [s.best for s in a.lines])
                     + (f"<ul>{notes}</ul>" if notes else ""))
    if a.gen_lines:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in tokens.differences(a.gen_lines))
        parts.append(f"<h2 id=generation-sizing>Sizing generation</h2><p>{html.escape(_title(ask, True))}. A request "
                     "is one generation of batch x new tokens output tokens; output tokens/s per GPU = peak "
                     "req/s x batch x new tokens; cost and energy are per million output tokens.</p>"
                     + pareto.html_table(tokens.COLUMNS, [tokens.cells(s) for s in a.gen_lines],
                                         [s.best for s in a.gen_lines])
                     + (f"<ul>{notes}</ul>" if notes else ""))
    if a.front:
        parts.append("<h2 id=pareto>Pareto front</h2><p>Throughput per GPU against p99 latency for every offline, "
                     "server and peak point of a model and dtype; on the front: no other point serves more at a "
                     "lower p99.</p>" + pareto.html_table(pareto.COLUMNS, [pareto.cells(p) for p in a.front])
                     + _figures(pareto.points(rows)))
    if a.gen_front:
        parts.append("<h2 id=generation-pareto>Pareto front of generation</h2><p>Output tokens/s per GPU against the "
                     "p99 time per output token for every offline, server and peak generation point of a model, "
                     "shape and dtype; on the front: no other point serves more tokens at a lower TPOT p99.</p>"
                     + pareto.html_table(tokens.FRONT_COLUMNS, [pareto.cells(p) for p in a.gen_front])
                     + _figures(tokens.points(rows), "p99 time per output token (ms)", "output tokens/s per GPU",
                                "output tokens/s per GPU against p99 time per output token"))
    return "".join(parts)


def _figures(pts: list[pareto.Point], *labels: str) -> str:
    try:
        plots = pareto.svg_plots(pts, *labels)
    except ImportError:  # matplotlib is a dependency, but a bare GPU image may lack it: keep the tables
        plots = []
    return "".join(f"<figure>{svg}<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, svg in plots)
