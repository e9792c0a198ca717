"""The tables the commands print: the trials of a dry run, the results of a run (every row, or a
summary by label and model with the rows not ok), a comparison of two runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from orchestrator.cli.console import console, fmt
from workers.contract import Status, Trial, succeeded
from workers.row import Row
from workers.rows import spec_columns
from workers.scenarios import DEFAULT as DEFAULT_SCENARIO
from workers.scenarios import label as scenario_label
from workers.scenarios import tag as scenario_tag

if TYPE_CHECKING:
    from orchestrator.answers.compare import Verdict

#: How many rows the results table may take when the output is not a terminal (CI logs, files).
PIPED_ROWS = 40
#: The most not-ok rows a summary lists (the rest are counted).
SUMMARY_PROBLEMS = 20
TABLE_MODES = ("auto", "full", "summary")


def trial_table(trials: list[Trial], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("trial_id", no_wrap=True, min_width=16)
    tags = [scenario_tag(spec_columns(tr)) for tr in trials]
    for col in ("model", "backend", "label", "batch", "dtype", "io", *(["scenario"] if any(tags) else [])):
        t.add_column(col)
    for tr, tag in zip(trials, tags):
        t.add_row(tr.trial_id, tr.model.name, tr.backend, tr.label, str(tr.batch_size), tr.dtype, tr.io,
                  *([tag or DEFAULT_SCENARIO] if any(tags) else []))
    return t


def _status(row: Row) -> str:
    """The status as the tables show it: an ok row that is not valid (workers/measure/validity.py) says so."""
    s = row["status"]
    if s == Status.OK and row.get("valid") is False:
        return "[yellow]ok, invalid[/]"
    color = {Status.OK: "green", Status.SKIPPED: "yellow"}.get(s, "red")
    return f"[{color}]{s}[/]"


def _note(row: Row) -> str:
    """The error of a row that failed, or why an ok row is not valid (not converged, noisy, contended...)."""
    return escape((row.get("error") or "; ".join(row.get("invalid_reasons") or []))[:100])


def summary_table(rows: list[Row]) -> Table:
    """One line per trial; an ``axes`` column when some model has named axes (seq=128)."""
    from orchestrator.answers.report import axes_text

    with_axes = any(r.get("axes") for r in rows)
    t = Table(title="Results", title_justify="left")
    scenarios = any(scenario_tag(r) for r in rows)  # the column only where some trial has one
    for col, just in (("model", "left"), ("label", "left"), ("batch", "right"), *([("axes", "left")] * with_axes),
                      ("dtype", "left"), ("io", "left"), *([("scenario", "left")] if scenarios else []),
                      ("status", "left"), ("median ms", "right"), ("p99 ms", "right"), ("samples/s", "right"),
                      ("note", "left")):
        t.add_column(col, justify=just)
    key = lambda r: (r["model"], r["batch_size"], r.get("axes") or "", r["dtype"], r["io"], r["label"],  # noqa: E731
                     scenario_tag(r))
    for r in sorted(rows, key=key):
        t.add_row(r["model"], r["label"], str(r["batch_size"]), *([axes_text(r)] * with_axes), r["dtype"], r["io"],
                  *([escape(scenario_label(r))] if scenarios else []),
                  _status(r), fmt(r.get("latency_ms_median")), fmt(r.get("latency_ms_p99")),
                  fmt(r.get("throughput"), ".1f"), _note(r))
    return t


def _config(r: Row) -> str:
    from orchestrator.answers.report import axes_text

    return " ".join(filter(None, [axes_text(r), f"bs{r['batch_size']} {r['dtype']} {r['io']}", scenario_tag(r)]))


def grouped_table(rows: list[Row]) -> Table:
    """One line per label x model: its trials by status, and its fastest and slowest ok ones.

    "failed" counts every status but ok and skipped (failed, timeout, oom, parity_failed); "invalid"
    the ok ones that are not numbers to act on (workers/measure/validity.py), also counted in "ok"."""
    t = Table(title="Results by label and model", title_justify="left")
    for col, just in (("label", "left"), ("model", "left"), ("trials", "right"), ("ok", "right"),
                      ("invalid", "right"), ("skipped", "right"), ("failed", "right"), ("fastest median ms", "right"),
                      ("slowest median ms", "right"), ("best samples/s", "right")):
        t.add_column(col, justify=just)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["model"]), []).append(r)
    for (label, model), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == Status.OK and r.get("latency_ms_median") is not None]
        fast = min(ok, key=lambda r: r["latency_ms_median"], default=None)
        slow = max(ok, key=lambda r: r["latency_ms_median"], default=None)
        best = max(ok, key=lambda r: r.get("throughput") or 0, default=None)
        skipped = sum(r["status"] == Status.SKIPPED for r in rs)
        bad = sum(not succeeded(r["status"]) for r in rs)  # failed, timeout, oom, parity_failed
        invalid = sum(r.get("valid") is False for r in ok)
        t.add_row(escape(label), escape(model), str(len(rs)), str(len(ok)),
                  f"[yellow]{invalid}[/]" if invalid else "0", str(skipped),
                  f"[red]{bad}[/]" if bad else "0",
                  f"{fmt(fast['latency_ms_median'])} ({_config(fast)})" if fast else "-",
                  f"{fmt(slow['latency_ms_median'])} ({_config(slow)})" if slow else "-",
                  f"{fmt(best.get('throughput'), '.1f')} ({_config(best)})" if best else "-")
    return t


def _table_fits(n_rows: int) -> bool:
    """Whether a full table of ``n_rows`` fits the screen (PIPED_ROWS when not a terminal)."""
    if not console.is_terminal:
        return n_rows <= PIPED_ROWS
    return n_rows + 8 <= console.size.height  # title, header, rules and the lines printed after it


def print_answer(table: Table | None, lines: Callable[[list[Row]], list[str]], rows: list[Row]) -> None:
    """An answer's table and the lines under it (``lines(rows)``), where the run has its rows
    (``table`` is not None)."""
    if table is not None:
        console.print(table)
        for line in lines(rows):
            console.print(escape(line), highlight=False)


def print_results(rows: list[Row], mode: str, out: Path) -> None:
    """The results of a run: every row (``full``), or a summary that stays readable at any size:
    one line per label x model, then the rows that are not ok (failures first), up to a limit."""
    if mode == "full" or (mode == "auto" and _table_fits(len(rows))):
        console.print(summary_table(rows))
        return
    console.print(grouped_table(rows))
    problems = sorted((r for r in rows if r["status"] != Status.OK), key=lambda r: (
        r["status"] == Status.SKIPPED, r["model"], r["label"], r["batch_size"], r["dtype"], r["io"]))
    if problems:
        t = summary_table(problems[:SUMMARY_PROBLEMS])
        t.title = f"Not ok: {len(problems)} trial(s)"
        console.print(t)
    more = len(problems) - SUMMARY_PROBLEMS
    if more > 0:
        console.print(f"... and {more} more not ok (--table full lists every row; the rows are in {out})",
                      highlight=False)


def compare_table(items: list[Verdict], confidence: float) -> Table:
    scenarios = any(scenario_tag(r) for r in items)  # the columns only where some trial has one
    title = ("Candidate vs base (each scenario on its metric; ratio > 1 is worse)" if scenarios
             else "Candidate vs base (ratio of medians: > 1 is slower)")
    t = Table(title=title, title_justify="left")
    for col, just in (("model", "left"), ("label", "left"), ("batch", "right"), ("dtype", "left"), ("io", "left"),
                      *([("scenario", "left"), ("metric", "left")] if scenarios else []),
                      *([("base", "right"), ("cand", "right")] if scenarios else [("base ms", "right"),
                                                                                  ("cand ms", "right")]),
                      ("ratio", "right"),
                      (f"{confidence:.0%} CI", "right"), ("verdict", "left"), ("note", "left")):
        t.add_column(col, justify=just)
    style = {"regressed": "bold red", "broken": "bold red", "improved": "green", "fixed": "green",
             "invalid": "yellow", "incomparable": "yellow"}
    for r in items:
        ci = "-" if r["ci_low"] is None else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
        v = r["verdict"]
        t.add_row(*(escape(str(r[k])) for k in ("model", "label", "batch_size", "dtype", "io")),
                  *([escape(scenario_label(r)), r.get("metric") or ""] if scenarios else []),
                  *([fmt(r.get("base_value")), fmt(r.get("cand_value"))] if scenarios
                    else [fmt(r["base_median_ms"]), fmt(r["cand_median_ms"])]),
                  fmt(r["ratio"]), ci,
                  f"[{style[v]}]{v}[/]" if v in style else v,
                  escape("; ".join(r["invalid_reasons"])[:100]) if r.get("invalid_reasons")
                  else "matched by label: options changed" if "cand_options" in r
                  else "matched by label" if r["matched_by"] == "label"
                  else "; ".join(f"{j['metric']}: {fmt(j['ratio'])} {j['verdict']}" for j in r.get("figures", [])[1:]))
    return t

