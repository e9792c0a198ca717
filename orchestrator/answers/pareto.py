"""The trade-off between throughput and latency: the Pareto front (docs/reports.md#pareto-front).

Every ok load row (the scenarios whose rows go to the capacity and peak sections) of a model and
dtype is a point: throughput per GPU (the row's ``throughput``, samples/s: one trial is one GPU)
against its p99 latency (ms); in a run on several GPU models each point's configuration names its
GPU (``device_name``), as points of different accelerators share a front. A point is on the front
unless another of the same model and dtype has at least its throughput and at most its p99, and is
better in one of them: two points equal in both stay on it together (ties kept). A row that is not
valid is not a point (it's not a figure to act on).
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.answers.tables import axes_text
from workers import scenarios
from workers.contract import Status
from workers.row import Row

LOAD_SECTIONS = ("capacity", "peak")


@dataclass
class Point:
    model: str
    dtype: str
    config: str  # label, batch size, requests in flight, scenario (and rate where it has one)
    throughput: float  # samples/s per GPU
    p99_ms: float
    gpu: str | None = None  # the row's device_name
    front: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def config_of(r: Row) -> str:
    rate = f" @{r['target_rate']:g}/s" if r.get("target_rate") else ""
    c = f" c={r['concurrency']}" if r.get("concurrency") else ""
    return f"{r.get('label')} bs={r.get('batch_size')}{c} {r.get('scenario')}{rate}"


def points(rows: list[Row]) -> list[Point]:
    """Every load point of the run (see the module's doc), front or not."""
    out = []
    for r in rows:
        if (r.get("status") != Status.OK or r.get("valid") is False or scenarios.of(r).report not in LOAD_SECTIONS
                or r.get("throughput") is None or r.get("latency_ms_p99") is None or r.get("new_tokens")):
            continue  # generation rows have a front of their own, in tokens (orchestrator.answers.tokens)
        out.append(Point(model=f"{r.get('model')} {axes_text(r)}".strip(), dtype=str(r.get("dtype")),
                         config=config_of(r), throughput=float(r["throughput"]), p99_ms=float(r["latency_ms_p99"]),
                         gpu=r.get("device_name")))
    return name_gpus(out)


def name_gpus(pts: list[Point]) -> list[Point]:
    """``pts``, each configuration naming its GPU where they were measured on several accelerators."""
    if len({p.gpu for p in pts}) > 1:
        for p in pts:
            p.config += f" on {p.gpu or '?'}"
    return pts


def dominates(a: Point, b: Point) -> bool:
    """``a`` serves at least as much at no worse a p99, and strictly better in one."""
    return (a.throughput >= b.throughput and a.p99_ms <= b.p99_ms
            and (a.throughput > b.throughput or a.p99_ms < b.p99_ms))


def mark(pts: list[Point]) -> list[Point]:
    """``pts`` with ``front`` set on the non-dominated ones of each model and dtype."""
    groups: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for p in pts:
        groups[(p.model, p.dtype)].append(p)
    for members in groups.values():
        for p in members:
            p.front = not any(dominates(q, p) for q in members if q is not p)
    return pts


def front(rows: list[Row]) -> list[Point]:
    """The front's points of the run, by model and dtype, fastest first."""
    return sorted((p for p in mark(points(rows)) if p.front), key=lambda p: (p.model, p.dtype, p.p99_ms, -p.throughput))


COLUMNS = ("model", "dtype", "configuration", "samples/s per GPU", "p99 ms")


def cells(p: Point) -> list[str]:
    return [p.model, p.dtype, p.config, f"{p.throughput:,.1f}", f"{p.p99_ms:.3g}"]


def svg_plots(pts: list[Point], x_label: str = "p99 request latency (ms)",
              y_label: str = "throughput per GPU (samples/s)",
              what: str = "throughput per GPU against p99 latency") -> list[tuple[str, str]]:
    """(caption, inline SVG) per model and dtype of ``pts`` (``points``: the load rows'): every point,
    the front joined, marked and labelled."""
    import matplotlib
    from matplotlib.figure import Figure

    from orchestrator.answers.plots import RC, SMALL, _svg

    groups: dict[tuple[str, str], list[Point]] = defaultdict(list)
    for p in mark(pts):
        groups[(p.model, p.dtype)].append(p)
    out = []
    for (model, dtype), members in sorted(groups.items()):
        rest = [p for p in members if not p.front]
        on = sorted((p for p in members if p.front), key=lambda p: p.p99_ms)
        with matplotlib.rc_context(RC):
            fig = Figure(figsize=(7, 4.2))
            ax = fig.subplots()
            if rest:
                ax.scatter([p.p99_ms for p in rest], [p.throughput for p in rest], facecolors="none",
                           edgecolors="#888", label="dominated")
            ax.plot([p.p99_ms for p in on], [p.throughput for p in on], "o-", color="#1a7f37", label="Pareto front")
            for p in on:
                ax.annotate(p.config, (p.p99_ms, p.throughput), textcoords="offset points", xytext=(4, 4),
                            fontsize=SMALL)
            ax.set(title=f"{model} {dtype}", xlabel=x_label, ylabel=y_label)
            ax.grid(True, alpha=.3)
            ax.legend()
            fig.tight_layout()
            svg = _svg(fig)
        out.append((f"{model} {dtype}: {what}; up and left is better; {len(on)} of "
                    f"{len(members)} configurations on the Pareto front (labelled)", svg))
    return out


def html_table(cols: tuple[str, ...], lines: list[list[str]], marked: list[bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(f"<tr{' class=best' if marked and marked[i] else ''}>"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for i, line in enumerate(lines))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
