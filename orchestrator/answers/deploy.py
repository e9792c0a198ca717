"""``report``'s deployment answers, in each of its forms: the sizing table (``sizing``) and the Pareto
front (``pareto``) as terminal tables, as JSON (``report --format json``) and as HTML sections.

``Ask`` is what the user asked for (``--target-rate``, ``--headroom``, ``--price``, ``--sort``), checked
before anything is read; the plan's ``prices:`` fill in the accelerators ``--price`` doesn't name.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from orchestrator.answers import pareto, sizing
from orchestrator.errors import InputError
from workers.row import Row


@dataclass
class Ask:
    target: float | None = None
    headroom: float = 0.0
    prices: dict[str, float] = field(default_factory=dict)
    sort: sizing.Sort = "gpus"

    @classmethod
    def from_options(cls, target: float | None, headroom: float, price: list[str] | None, sort: str) -> Ask:
        """The command line's options, checked (InputError naming the option)."""
        if target is not None and not target > 0:
            raise InputError(f"--target-rate {target:g}: must be more than 0 requests/s")
        if not 0 <= headroom < 100:
            raise InputError(f"--headroom {headroom:g}: must be at least 0 (0.2 = 20% above the target) and under 100")
        if sort not in sizing.SORTS:
            raise InputError(f"--sort {sort}: expected one of {', '.join(sizing.SORTS)}")
        return cls(target, headroom, sizing.parse_prices(price or []), sort)  # type: ignore[arg-type]

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


def answers(rows: list[Row], ask: Ask) -> tuple[list[sizing.Sized], list[pareto.Point]]:
    return sizing.size(rows, ask.target, ask.headroom, ask.prices, ask.sort), pareto.front(rows)


def _title(ask: Ask) -> str:
    parts = ["Sizing: the most requests/s per GPU within the p99 bound"]
    if ask.target is not None:
        room = f" + {ask.headroom:.0%} headroom" if ask.headroom else ""
        parts.append(f"GPUs for {ask.target:g} requests/s{room}")
    if ask.prices:
        parts.append("prices " + ", ".join(f"{k} {v:g} USD/GPU-h" for k, v in ask.prices.items()))
    return "; ".join(parts) + f" (sorted by {ask.sort}; * best per group)"


def terminal(rows: list[Row], ask: Ask) -> tuple[list[Table], list[str]]:
    """The sizing and Pareto tables for the terminal (none where the run has no such rows), and the lines
    naming where the cheapest and the fastest differ."""
    lines, front = answers(rows, ask)
    tables = []
    if lines:
        t = Table(title=_title(ask), title_justify="left")
        for col in sizing.COLUMNS:
            t.add_column(col, justify="left" if col in ("model", "dtype", "configuration", "GPU", "measured") else
                         "right")
        for s in lines:
            t.add_row(*sizing.cells(s))
        tables.append(t)
    if front:
        t = Table(title="Pareto front: throughput per GPU against p99 latency (no other point of the model and "
                        "dtype serves more at a lower p99)", title_justify="left")
        for col in pareto.COLUMNS:
            t.add_column(col, justify="right" if "/" in col or "ms" in col else "left")
        for p in front:
            t.add_row(*pareto.cells(p))
        tables.append(t)
    return tables, sizing.differences(lines)


def as_json(rows: list[Row], ask: Ask) -> dict[str, Any]:
    """The report as data: every trial's main figures, the sizing lines and the Pareto front."""
    lines, front = answers(rows, ask)
    keep = ("trial_id", "model", "label", "backend", "batch_size", "dtype", "io", "scenario", "concurrency",
            "target_rate", "latency_bound_ms", "status", "valid", "latency_ms_median", "latency_ms_p99",
            "latency_ms_p99_upper", "throughput", "peak_rate", "peak_rate_fail", "energy_j_per_request",
            "device_name", "node_trials_busy_max")
    return {"ask": {"target_rate": ask.target, "headroom": ask.headroom, "prices": ask.prices, "sort": ask.sort},
            "trials": [{k: r.get(k) for k in keep} for r in rows],
            "sizing": [s.as_json() for s in lines], "sizing_notes": sizing.differences(lines),
            "pareto": [p.as_json() for p in front]}


def json_text(rows: list[Row], ask: Ask) -> str:
    import json

    return json.dumps(as_json(rows, ask), indent=1, default=str)


def html_sections(rows: list[Row], ask: Ask) -> str:
    """The sizing table and the Pareto front (table and plots) as HTML; empty without load rows."""
    lines, front = answers(rows, ask)
    parts = []
    if lines:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in sizing.differences(lines))
        parts.append(f"<h2>Sizing</h2><p>{html.escape(_title(ask))}. The bracket is where the true peak lies; "
                     "<i>measured</i> says whether the figure was taken with the node's other GPUs busy.</p>"
                     + pareto.html_table(sizing.COLUMNS, [sizing.cells(s) for s in lines], [s.best for s in lines])
                     + (f"<ul>{notes}</ul>" if notes else ""))
    if front:
        try:
            plots = pareto.svg_plots(rows)
        except ImportError:
            plots = []
        figs = "".join(f"<figure>{svg}<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, svg in plots)
        parts.append("<h2 id=pareto>Pareto front</h2><p>Throughput per GPU against p99 latency for every offline, "
                     "server and peak point of a model and dtype; on the front: no other point serves more at a "
                     "lower p99.</p>" + pareto.html_table(pareto.COLUMNS, [pareto.cells(p) for p in front]) + figs)
    return "".join(parts)
