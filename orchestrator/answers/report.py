"""A run as answers: a table of every trial side by side, and one self-contained HTML page.

Rows are grouped by (model, batch size, dtype, io); inside a group every backend label gets its
median and p99 latency, throughput and speedup against a baseline label (``torch-eager`` by
default; in a run without it, the label with the most ok trials: :func:`resolve_baseline`):
speedup = baseline median / this median, so 2.0x is twice as fast. Trials that did not run cleanly
(skipped, failed, parity_failed, timeout, oom) stay in the table with their reason; an ok row that
is not valid is ``ok, invalid`` with its reasons in every view (tables, counts, a mark in every plot).

When the group has no baseline row (e.g. ``ort-default`` runs with ``io: host`` while eager runs
with ``io: device``), the speedup is taken against the baseline at the same model, batch size
and dtype with the other io, and marked with the io it was taken against.

Load scenarios (offline, server, find-peak) group apart from single-stream rows (the scenario and
its parameters are part of the group), and their speedup is on the scenario's own figure, higher
is better: offline throughput, server 1 / p99, find-peak peak rate. A find-peak table lists the
peak rates with their brackets and says, per model, batch size and dtype, which label serves the
most requests within the bound next to which has the lowest single-request latency. The HTML page
adds throughput-vs-latency curves per label (offline and server rows: p99 against samples/s).

The HTML page has no scripts and loads nothing: the plots are inline SVG (matplotlib), the
style is inline, so it works offline and can be attached to a CI job as one file.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from pathlib import Path

from orchestrator.answers import paired
from orchestrator.answers.deploy import Ask, html_sections
from orchestrator.answers.generation import generation_html
from orchestrator.answers.plots import curves, plots
from orchestrator.answers.tables import (
    COLUMNS,
    DEFAULT_BASELINE,
    ENV_COLUMNS,
    NUMERIC,
    PEAK_COLUMNS,
    Summarized,
    axes_text,
    columns,
    counts_text,
    fairness_lines,
    group,
    invalid,
    peak_names,
    peak_rows,
    peak_table,
    resolve_baseline,
    row_cells,
    serving_answers,
    speed,
    status_text,
    summarize,
    terminal_table,
    unregistered_note,
)
from orchestrator.results.read import RunInfo, load_results, run_info
from workers import scenarios
from workers.contract import succeeded
from workers.row import Row

#: What callers import from here (the tables and the plots have modules of their own).
__all__ = ["COLUMNS", "DEFAULT_BASELINE", "axes_text", "columns", "counts_text", "fairness_lines",
           "html_report", "invalid",
           "peak_rows", "peak_table", "profile_href", "resolve_baseline", "row_cells", "serving_answers", "speed",
           "status_text", "summarize", "terminal_table", "unregistered_note"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.first td{border-top:2px solid #bbb}
.ok{color:#1a7f37}.skipped{color:#9a6700}.invalid{color:#9a6700;font-weight:600}.bad{color:#cf222e;font-weight:600}
figure{margin:1em 0}svg{max-width:100%;height:auto}pre{background:#f6f8fa;padding:1em;overflow:auto}
.muted{color:#666}tr.best td{font-weight:600}
"""


def profile_href(r: Row, run_dir: str | Path, report_dir: str | Path) -> str | None:
    """The link to a row's profile from a page in ``report_dir``: a relative URL, or None without one."""
    import os
    from urllib.parse import quote

    rel = r.get("profile_file")
    if not rel:
        return None
    target = Path(run_dir).resolve() / rel
    return quote(Path(os.path.relpath(target, Path(report_dir).resolve())).as_posix())


def _html_table(summary: list[Summarized], hrefs: list[str | None] | None = None) -> str:
    cols = columns(summary)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(summary):
        cells = row_cells(r, cols)
        first = i == 0 or group(summary[i - 1]) != group(r)
        status = r.get("status")
        cls = "invalid" if invalid(r) else status if succeeded(status) else "bad"
        tds = []
        for col, cell in zip(cols, cells):
            if col in ("model", "batch", "dtype", "io", "scenario") and not first:
                cell = ""
            attr = ' class="num"' if col in NUMERIC else ""
            attr = f' class="{cls}"' if col == "status" else attr
            title = f' title="{html.escape(r.get("error") or "")}"' if col == "note" and r.get("error") else ""
            link = ""
            if col == "note" and hrefs and hrefs[i]:
                link = f'{" " if cell else ""}<a href="{html.escape(hrefs[i])}">profile</a>'
            tds.append(f"<td{attr}{title}>{html.escape(cell)}{link}</td>")
        body.append(f'<tr{" class=first" if first and i else ""}>{"".join(tds)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _environment(rows: list[Row], info: RunInfo) -> str:
    facts: list[tuple[str, str]] = []
    for key in ("run_id", "plan", "device", "started_at"):
        if info.get(key):
            facts.append((key, str(info[key])))
    if info.get("workers"):
        facts.append(("workers", f"{len(info['workers'])}: {', '.join(map(str, info['workers']))}"))
    for col in ENV_COLUMNS:
        if col in info:
            continue
        values = sorted({str(r[col]) for r in rows if r.get(col) is not None})
        if values:
            facts.append((col, ", ".join(values)))
    gpus = {r.get("gpu_uuid") for r in rows if r.get("gpu_uuid")}
    if gpus:
        facts.append(("GPUs used", str(len(gpus))))
    trs = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    plan = info.get("plan_yaml")
    plan_html = (f"<details><summary>Resolved plan (_plan.yaml)</summary><pre>{html.escape(plan)}</pre></details>"
                 if plan else "")
    return f"<table>{trs}</table>{plan_html}"


def html_report(run_dir: str | Path, baseline: str | None = None, report_path: str | Path | None = None,
                ask: Ask | None = None) -> str:
    """The whole report of one run directory as one HTML document (no scripts, no external files).

    Trials with a profile link to it (_profiles/ in the run directory), relative to ``report_path``,
    where the page will be written (default: inside the run directory). ``baseline``: see
    :func:`resolve_baseline`; ``ask``: the sizing options (``orchestrator.answers.deploy``)."""
    rows = load_results(run_dir).to_pylist()
    report_dir = Path(report_path).parent if report_path is not None else Path(run_dir)
    info = run_info(run_dir)
    baseline, baseline_note = resolve_baseline(rows, baseline)
    summary = summarize(rows, baseline)
    title = f"infer-orch report: {info.get('plan') or rows[0].get('plan') or Path(run_dir).name}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">{len(rows)} trials: '
             f"{html.escape(counts_text(rows))}. Run directory "
             f"<code>{html.escape(str(run_dir))}</code>; generated "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
             f"<h2>Results</h2><p>Speedup: median latency of <b>{html.escape(baseline)}</b> / this median "
             "(higher is faster). Trials that did not run cleanly keep their status and reason; <i>ok, invalid</i>: "
             "measured, but not a number to act on (its reasons in the note)."
             + "".join(f" <b>{html.escape(note)}</b>." for note in (baseline_note, unregistered_note(rows)) if note)
             + "</p>",
             _html_table(summary, [profile_href(r, run_dir, report_dir) for r in summary])]
    fair = fairness_lines(rows)
    if fair:
        parts.append("<ul class=muted>" + "".join(f"<li>{html.escape(x)}</li>" for x in fair) + "</ul>")
    peaks = peak_rows(rows)
    if peaks:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in PEAK_COLUMNS)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in peaks)
        answers = "".join(f"<li>{html.escape(a)}</li>" for a in serving_answers(rows))
        parts.append(f"<h2>Peak rate within the p99 bound</h2><p>{peak_names()}: the highest arrival rate (Poisson "
                     "unless constant) whose p99 request latency stayed within the bound, found by bisection "
                     "between server runs; the bracket is the highest rate that passed and the lowest that failed."
                     f"</p><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"
                     + (f"<ul>{answers}</ul>" if answers else ""))
    parts.append(generation_html(rows))
    parts.append(paired.html_section(rows))
    by_model: dict[str, list[Row]] = defaultdict(list)
    loaded: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        section = scenarios.of(r).report
        if section == "latency":
            by_model[str(r.get("model"))].append(r)
        elif section == "capacity":
            loaded[str(r.get("model"))].append(r)
    try:
        figures = [p for model in sorted(by_model) for p in plots(model, by_model[model])]
        figures += [p for model in sorted(loaded) for p in curves(model, loaded[model])]
    except ImportError:  # matplotlib is a dependency, but a bare GPU image may lack it: keep the table
        figures = []
        parts.append("<p class=bad>No plots: matplotlib is not installed (pip install matplotlib).</p>")
    sections = {"latency": "Latency vs batch size", "throughput": "Throughput",
                "distribution": "Latency distributions", "capacity": "Throughput vs latency (load scenarios)"}
    for key, heading in sections.items():
        figs = [f"<figure>{svg}<figcaption>{html.escape(cap)}</figcaption></figure>"
                for section, cap, svg in figures if section == key]
        if figs:
            parts.append(f"<h2>{heading}</h2>" + "".join(figs))
    parts.append(html_sections(rows, ask or Ask()))
    parts.append("<h2>Environment</h2>" + _environment(rows, info))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
