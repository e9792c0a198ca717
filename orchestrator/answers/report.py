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
import io as _io
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from orchestrator.results.read import load_results, run_info
from workers import scenarios
from workers.contract import Status, succeeded
from workers.scenarios import label as scenario_label
from workers.scenarios import tag as scenario_tag

DEFAULT_BASELINE = "torch-eager"
GROUP = ("model", "axes", "batch_size", "dtype", "io")
STATUS_STYLE = {Status.OK: "green", Status.SKIPPED: "yellow"}
ENV_COLUMNS = ("device", "device_name", "node", "torch_version", "ort_version", "cuda_version", "driver_version")


def _group(r: dict[str, Any]) -> tuple[Any, ...]:
    """(model, axes, batch, dtype, io, scenario tag): a row's group in the table."""
    return (*(r.get(k) for k in GROUP), scenario_tag(r))


def _wide(r: dict[str, Any]) -> tuple[Any, ...]:
    """The group without io: where a baseline is looked for when the row's own group has none."""
    g = _group(r)
    return (*g[:4], g[5])


def _order(r: dict[str, Any], baseline: str) -> tuple[Any, ...]:
    return (str(r.get("model")), str(r.get("axes") or ""), r.get("batch_size") or 0, str(r.get("dtype")),
            str(r.get("io")), scenario_tag(r), r.get("label") != baseline, str(r.get("label")))


def speed(r: dict[str, Any]) -> float | None:
    """The figure a row's speedup compares, higher is better: its scenario's first figure (a latency
    inverted)."""
    return scenarios.of(r).figures[0].speed(r)


def _is_baseline(r: dict[str, Any], baseline: str) -> bool:
    return r.get("status") == Status.OK and (r.get("label") == baseline or r.get("backend") == baseline)


def _pick_baseline(rows: Iterable[dict[str, Any]], baseline: str) -> dict[str, Any] | None:
    found = [r for r in rows if _is_baseline(r, baseline)]
    # a label equal to the baseline wins over a backend equal to it (torch-eager vs torch-eager-cl)
    found.sort(key=lambda r: (r.get("label") != baseline, r.get("label") != r.get("backend")))
    return found[0] if found else None


def resolve_baseline(rows: list[dict[str, Any]], asked: str | None = None) -> tuple[str, str]:
    """(the baseline the speedups are against, a note saying why when it is not what was asked for).

    Asked for none: ``torch-eager`` where the run has it, else the label with the most ok trials
    (alphabetically first of those), said in the note. Asked for one the run lacks: the note says
    there are no speedups, and which labels there are."""
    ok = [r for r in rows if r.get("status") == Status.OK]
    labels = sorted({str(r.get("label")) for r in ok})
    want = asked or DEFAULT_BASELINE
    if any(_is_baseline(r, want) for r in ok):
        return want, ""
    if asked or not labels:
        return want, (f"no ok trial has the label or backend {want}: no speedups"
                      + (f" (--baseline one of: {', '.join(labels)})" if labels else ""))
    counts = {label: sum(str(r.get("label")) == label for r in ok) for label in labels}
    pick = min(labels, key=lambda label: (-counts[label], label))
    return pick, (f"no {DEFAULT_BASELINE} trial in this run: speedups are against {pick}, the label with the most "
                  "ok trials (--baseline LABEL picks another)")


def summarize(rows: list[dict[str, Any]], baseline: str = DEFAULT_BASELINE) -> list[dict[str, Any]]:
    """Rows sorted by group and label, each with ``speedup`` (or None) and ``speedup_vs`` (io note)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    wide: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[_group(r)].append(r)
        wide[_wide(r)].append(r)
    out = []
    for r in sorted(rows, key=lambda r: _order(r, baseline)):
        base, vs = _pick_baseline(groups[_group(r)], baseline), None
        if base is None:
            base = _pick_baseline(wide[_wide(r)], baseline)
            vs = base and f"vs io={base.get('io')}"
        speedup = None
        if base is not None and r.get("status") == Status.OK and speed(r) and speed(base):
            speedup = speed(r) / speed(base)
        out.append({**r, "speedup": speedup, "speedup_vs": vs if speedup is not None else None})
    return out


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _speedup(r: dict[str, Any]) -> str:
    if r["speedup"] is None:
        return "-"
    return f"{r['speedup']:.2f}x" + (f" ({r['speedup_vs']})" if r["speedup_vs"] else "")


#: The parity figures a row's note shows (not every ``parity_*`` column: ``parity_s`` is a time).
PARITY_NOTE = ("parity_max_abs_err", "parity_max_rel_err")


def invalid(r: dict[str, Any]) -> bool:
    """An ok row that is not a number to act on (workers/measure/validity.py): every view says so."""
    return r.get("status") == Status.OK and r.get("valid") is False


def status_text(r: dict[str, Any]) -> str:
    """The status as every view of a row shows it: ``ok, invalid`` for an ok row that is not valid."""
    return "ok, invalid" if invalid(r) else str(r.get("status"))


def counts_text(rows: list[dict[str, Any]]) -> str:
    """``3 ok, 1 ok but invalid, 2 skipped``: the statuses, the invalid ok rows counted apart."""
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts["ok but invalid" if invalid(r) else str(r.get("status"))] += 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _note(r: dict[str, Any]) -> str:
    if r.get("status") != Status.OK:
        return (r.get("error") or "").strip().splitlines()[0][:100] if r.get("error") else ""
    notes = ["invalid: " + "; ".join(r.get("invalid_reasons") or ["see valid"])] if invalid(r) else []
    notes += [f"{k}={r[k]:.3g}" for k in PARITY_NOTE if isinstance(r.get(k), float)]
    if r.get("hit_max_time"):
        notes.append("hit max_time_s")
    if r.get("profile_error"):
        notes.append(f"no profile: {r['profile_error']}"[:100])
    return ", ".join(notes)


COLUMNS = ("model", "batch", "dtype", "io", "label", "status", "median ms", "p99 ms", "samples/s", "samples/J",
           "speedup", "note")
NUMERIC = frozenset({"batch", "median ms", "p99 ms", "samples/s", "samples/J", "speedup"})


def axes_text(r: dict[str, Any]) -> str:
    """A row's named axes as ``seq=128 ...`` (the ``axes`` column is JSON text); empty without."""
    import json

    raw = r.get("axes")
    return " ".join(f"{k}={v}" for k, v in json.loads(raw).items()) if raw else ""


def columns(summary: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: a scenario column after io where some row has a load scenario."""
    if not any(scenario_tag(r) for r in summary):
        return COLUMNS
    return (*COLUMNS[:4], "scenario", *COLUMNS[4:])


def _cells(r: dict[str, Any], cols: tuple[str, ...] = COLUMNS) -> list[str]:
    model = f"{r.get('model')} {axes_text(r)}".strip()
    scenario = [scenario_label(r)] if "scenario" in cols else []
    return [model, str(r.get("batch_size")), str(r.get("dtype")), str(r.get("io")), *scenario, str(r.get("label")),
            status_text(r), _fmt(r.get("latency_ms_median")), _fmt(r.get("latency_ms_p99")),
            _fmt(r.get("throughput"), ".1f"), _fmt(_per_joule(r), ".1f"), _speedup(r), _note(r)]


def _per_joule(r: dict[str, Any]) -> float | None:
    """Samples per joule of the GPU's energy (null without an energy measurement)."""
    j = r.get("energy_j_per_sample")
    return 1.0 / j if j and r.get("status") == Status.OK else None


def terminal_table(summary: list[dict[str, Any]], baseline: str = DEFAULT_BASELINE) -> Table:
    """The summary as a rich Table; a group's keys are printed once, groups are ruled off."""
    t = Table(title=f"Results (speedup vs {baseline})", title_justify="left")
    cols = columns(summary)
    for col in cols:
        t.add_column(col, justify="right" if col in NUMERIC
                     else "left", overflow="fold")
    keys = len(cols) - len(COLUMNS) + 4  # the group's columns, printed once a group
    for i, r in enumerate(summary):
        cells = [escape(c) for c in _cells(r, cols)]  # errors hold brackets ([tensorrt]) Rich would eat
        first = i == 0 or _group(summary[i - 1]) != _group(r)
        last = i == len(summary) - 1 or _group(summary[i + 1]) != _group(r)
        if not first:
            cells[:keys] = [""] * keys
        style = "yellow" if invalid(r) else STATUS_STYLE.get(r.get("status"), "red")
        cells[keys + 1] = f"[{style}]{cells[keys + 1]}[/]"
        t.add_row(*cells, end_section=last)
    return t


# --- find-peak ----------------------------------------------------------------------------------

PEAK_COLUMNS = ("model", "batch", "dtype", "io", "label", "concurrency", "p99 bound ms", "peak req/s",
                "samples/s", "bracket req/s", "p99 ms at peak", "valid")


def peak_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The cells of the find-peak table: one line per find-peak row, by group, highest peak first."""
    found = [r for r in rows if scenarios.of(r).report == "peak"]
    found.sort(key=lambda r: (str(r.get("model")), r.get("batch_size") or 0, str(r.get("dtype")), str(r.get("io")),
                              -(r.get("peak_rate") or 0)))
    out = []
    for r in found:
        ok = r.get("status") == Status.OK
        fail = r.get("peak_rate_fail")
        bracket = f"{_fmt(r.get('peak_rate'), '.1f')} - {_fmt(fail, '.1f')}" if ok else "-"
        out.append([f"{r.get('model')} {axes_text(r)}".strip(), str(r.get("batch_size")), str(r.get("dtype")),
                    str(r.get("io")), str(r.get("label")), str(r.get("concurrency")),
                    _fmt(r.get("latency_bound_ms"), "g"), _fmt(r.get("peak_rate"), ".1f") if ok else str(r["status"]),
                    _fmt(r.get("throughput"), ".1f"), bracket, _fmt(r.get("latency_ms_p99")),
                    "-" if r.get("valid") is None else "yes" if r["valid"] else "no: " + "; ".join(
                        r.get("invalid_reasons") or [])])
    return out


def serving_answers(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, batch size and dtype with find-peak rows: which label serves the most requests/s
    within the bound, next to which has the lowest single-request latency, and whether they differ."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == Status.OK:
            groups[(str(r.get("model")), axes_text(r), r.get("batch_size"), str(r.get("dtype")))].append(r)
    out = []
    for (model, axes, bs, dtype), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        peaks = [r for r in rs if scenarios.of(r).report == "peak" and r.get("peak_rate")]
        singles = [r for r in rs if scenarios.of(r).report == "latency" and r.get("latency_ms_median")]
        if not peaks:
            continue
        best = max(peaks, key=lambda r: r["peak_rate"])
        what = f"{model} {axes} batch {bs} {dtype}".replace("  ", " ")
        line = (f"{what}: most requests/s at p99 <= {best['latency_bound_ms']:g} ms: {best['label']} "
                f"({best['io']}, concurrency {best['concurrency']}): {best['peak_rate']:.1f}/s")
        if singles:
            fast = min(singles, key=lambda r: r["latency_ms_median"])
            same = fast["label"] == best["label"]
            line += (f"; lowest single-request latency: {fast['label']} ({fast['io']}): "
                     f"{fast['latency_ms_median']:.3f} ms. "
                     + ("The same backend answers both." if same else "They differ: the fastest single request "
                        "is not the most traffic served within the bound."))
        out.append(line)
    return out


def _peak_names() -> str:
    """The scenarios whose rows go to the peak table."""
    return " / ".join(n for n in scenarios.names() if scenarios.get(n).report == "peak")


def peak_table(rows: list[dict[str, Any]]) -> Table | None:
    """The find-peak table for the terminal, or None when the run has no find-peak rows."""
    cells = peak_rows(rows)
    if not cells:
        return None
    t = Table(title=f"Peak rate within the p99 bound ({_peak_names()})", title_justify="left")
    for col in PEAK_COLUMNS:
        t.add_column(col, justify="right" if col not in ("model", "dtype", "io", "label", "valid") else "left")
    for c in cells:
        t.add_row(*(escape(x) for x in c))
    return t


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.first td{border-top:2px solid #bbb}
.ok{color:#1a7f37}.skipped{color:#9a6700}.invalid{color:#9a6700;font-weight:600}.bad{color:#cf222e;font-weight:600}
figure{margin:1em 0}svg{max-width:100%;height:auto}pre{background:#f6f8fa;padding:1em;overflow:auto}
.muted{color:#666}
"""


def _svg(fig: Any) -> str:
    buf = _io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _log_y(ax: Any) -> None:
    """Log y axis with plain numbers; minor ticks labelled only when there is room for them."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=SMALL)


def _series(rows: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """ok rows of one model by series, and colours. A series is a label, plus what else the rows
    differ in that the tables group by: the io where the model ran with several, its axes (seq=128)
    where it ran with several: a line never joins two of them."""
    from matplotlib import colormaps

    several_io = len({r.get("io") for r in rows}) > 1
    several_axes = len({r.get("axes") or "" for r in rows}) > 1
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == Status.OK:
            extra = ", ".join(filter(None, [str(r["io"]) if several_io else "", axes_text(r) if several_axes else ""]))
            series[f"{r['label']} ({extra})" if extra else str(r["label"])].append(r)
    cmap = colormaps["tab10"]
    colors = {name: cmap(i % 10) for i, name in enumerate(sorted(series))}
    return dict(sorted(series.items())), colors


#: The most batch sizes a plot labels one by one, and draws throughput bars for (lines beyond).
MAX_TICKS = 16
#: The most distribution panels (dtypes x batch sizes) a model's figure draws: a sweep of thousands
#: of trials gets its summaries (table, latency and throughput lines), not thousands of box plots.
MAX_PANELS = 24
#: Panels side by side in a figure: more wrap to the next row. A figure is at most about 14 in
#: (1,350 CSS px) wide, and its smallest text 8 pt: on a page 1,400 px wide (the body is at most
#: 1,200 px) every chart's text renders at least 8 CSS px tall.
MAX_COLS = 3
PANEL_W = 4.6
SMALL = 8  # legends, minor ticks, annotations
#: How an invalid point is marked in every plot (the table's note says why).
INVALID_MARK = {"marker": "X", "s": 70, "color": "#cf222e", "zorder": 5, "linewidths": .5, "edgecolors": "white"}
RC = {"svg.fonttype": "none", "svg.hashsalt": "infer-orch", "font.size": 9, "legend.fontsize": SMALL,
      "xtick.labelsize": SMALL, "ytick.labelsize": SMALL}


def _grid(n: int, panel_h: float) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most ``MAX_COLS`` a row; the panels in reading order."""
    from matplotlib.figure import Figure

    cols = min(MAX_COLS, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(PANEL_W * cols, panel_h * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _mark_invalid(ax: Any, points: list[tuple[float, float]], marked: list[bool]) -> None:
    """Mark ``points`` (of rows not valid) with a red cross; the first mark of a panel joins its legend."""
    if points:
        ax.scatter(*zip(*points), label=None if marked else "invalid (see the table)", **INVALID_MARK)
        marked.append(True)


def _latency_figure(model: str, series: dict[str, list[dict[str, Any]]], colors: dict[str, Any],
                    dtypes: list[str], batches: list[int]) -> str:
    fig, axes = _grid(len(dtypes), 3.6)
    for ax, dtype in zip(axes, dtypes):
        marked: list[bool] = []
        for name, rs in series.items():
            mine = sorted((r for r in rs if r["dtype"] == dtype), key=lambda r: r["batch_size"])
            if mine:
                ax.plot([r["batch_size"] for r in mine], [r["latency_ms_median"] for r in mine], marker="o",
                        label=name, color=colors[name])
                _mark_invalid(ax, [(r["batch_size"], r["latency_ms_median"]) for r in mine if invalid(r)], marked)
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        _log_y(ax)
        if len(batches) <= MAX_TICKS:
            ax.set_xticks(batches, [str(b) for b in batches])
        ax.set(title=f"{model} {dtype}", xlabel="batch size", ylabel="median latency (ms)")
        ax.grid(True, which="both", alpha=.3)
        ax.legend()
    fig.tight_layout()
    return _svg(fig)


def _throughput_figure(model: str, series: dict[str, list[dict[str, Any]]], colors: dict[str, Any],
                       dtypes: list[str], batches: list[int]) -> str:
    fig, axes = _grid(len(dtypes), 3.6)
    width = 0.8 / len(series)
    for ax, dtype in zip(axes, dtypes):
        marked: list[bool] = []
        for k, (name, rs) in enumerate(series.items()):
            by_bs = {r["batch_size"]: r for r in rs if r["dtype"] == dtype and r["throughput"]}
            if len(batches) > MAX_TICKS:  # too many for bars: a line per series
                pts = sorted(by_bs.items())
                if pts:
                    ax.plot([b for b, _ in pts], [r["throughput"] for _, r in pts], label=name, color=colors[name])
                    _mark_invalid(ax, [(b, r["throughput"]) for b, r in pts if invalid(r)], marked)
                continue
            xs = [i + (k - (len(series) - 1) / 2) * width for i, b in enumerate(batches) if b in by_bs]
            bars = [by_bs[b] for b in batches if b in by_bs]
            ax.bar(xs, [r["throughput"] for r in bars], width, label=name, color=colors[name])
            _mark_invalid(ax, [(x, r["throughput"]) for x, r in zip(xs, bars) if invalid(r)], marked)
        if len(batches) <= MAX_TICKS:
            ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        _log_y(ax)
        ax.set(title=f"{model} {dtype}", xlabel="batch size", ylabel="throughput (samples/s)")
        ax.grid(True, axis="y", which="both", alpha=.3)
        ax.legend()
    fig.tight_layout()
    return _svg(fig)


def _distribution_figure(model: str, series: dict[str, list[dict[str, Any]]], colors: dict[str, Any],
                         dtypes: list[str], batches: list[int]) -> str:
    from matplotlib.ticker import FuncFormatter

    names = list(series)
    panels = [(dtype, bs) for dtype in dtypes for bs in batches]
    fig, axes = _grid(len(panels), 1.2 + 0.32 * len(names))
    for k, (ax, (dtype, bs)) in enumerate(zip(axes, panels)):
        found = [next((r for r in series[name] if r["dtype"] == dtype and r["batch_size"] == bs), None)
                 for name in names]
        data = [r["samples_ms"] if r and r.get("samples_ms") else [float("nan")] for r in found]
        bp = ax.boxplot(data, orientation="horizontal", whis=(1, 99), widths=.6, patch_artist=True,
                        flierprops={"markersize": 2, "alpha": .5})
        for patch, name, r in zip(bp["boxes"], names, found):
            patch.set_facecolor(colors[name])
            patch.set_alpha(.6)
            if r is not None and invalid(r):
                patch.set(hatch="xx", edgecolor=INVALID_MARK["color"])
        ticks = [f"{name} (invalid)" if r is not None and invalid(r) else name for name, r in zip(names, found)]
        ax.set_yticks(range(1, len(names) + 1), ticks if k % MAX_COLS == 0 else [""] * len(names))
        for tick, r in zip(ax.get_yticklabels(), found):
            if r is not None and invalid(r):
                tick.set_color(INVALID_MARK["color"])
        finite = [v for d in data for v in d if v == v and v > 0]
        if finite and max(finite) / min(finite) > 20:  # eager at 40 ms beside ORT at 0.01 ms
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(f"{dtype} batch {bs}")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, axis="x", alpha=.3)
    fig.suptitle(f"{model}: latency of every timed iteration (box: quartiles, whiskers: p1-p99)")
    fig.tight_layout()
    return _svg(fig)


def _plots(model: str, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(section, caption, svg) for one model's single-stream rows: latency vs batch size,
    throughput, distributions."""
    import matplotlib

    series, colors = _series(rows)
    if not series:
        return []
    dtypes = sorted({r["dtype"] for s in series.values() for r in s})
    batches = sorted({r["batch_size"] for s in series.values() for r in s})
    single = f"{scenarios.DEFAULT} trials only (the load scenarios are under Throughput vs latency)"
    marks = "; a red cross marks an invalid row" if any(invalid(r) for s in series.values() for r in s) else ""
    with matplotlib.rc_context(RC):
        out = [("latency", f"{model}: median latency per inference vs batch size (log scales); {single}{marks}",
                _latency_figure(model, series, colors, dtypes, batches)),
               ("throughput", f"{model}: throughput at the median latency (log scale); {single}{marks}",
                _throughput_figure(model, series, colors, dtypes, batches))]
        if len(dtypes) * len(batches) > MAX_PANELS:
            out.append(("distribution", f"{model}: {len(dtypes) * len(batches)} configurations (dtype x batch "
                        f"size) are too many to draw one distribution each (the most is {MAX_PANELS}); every "
                        "trial's samples are in the results (samples_ms)", ""))
            return out
        out.append(("distribution", f"{model}: latency distribution of each trial ({scenarios.DEFAULT}; an invalid "
                    "row's box is hatched)", _distribution_figure(model, series, colors, dtypes, batches)))
    return out


def _curves(model: str, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(section, caption, svg): p99 request latency against throughput, one line per label (and io,
    axes, scenario), one panel per dtype and batch size; offline points are labelled with their
    concurrency, invalid points marked."""
    import matplotlib

    ok = [r for r in rows if r.get("status") == Status.OK and r.get("throughput") and r.get("latency_ms_p99")]
    if not ok:
        return []
    panels = sorted({(r["dtype"], r["batch_size"]) for r in ok})
    several_axes = len({r.get("axes") or "" for r in ok}) > 1
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        lines[scenarios.of(r).curve_label(r, axes_text(r) if several_axes else "")].append(r)
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    colors = {name: cmap(i % 10) for i, name in enumerate(sorted(lines))}
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(panels), 3.8)
        for ax, (dtype, bs) in zip(axes, panels):
            marked: list[bool] = []
            for name, rs in sorted(lines.items()):
                pts = sorted((r["throughput"], r["latency_ms_p99"], r) for r in rs
                             if r["dtype"] == dtype and r["batch_size"] == bs)
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=scenarios.of(rs[0]).curve_marker,
                        label=name, color=colors[name])
                _mark_invalid(ax, [(x, y) for x, y, r in pts if invalid(r)], marked)
                for x, y, r in pts:
                    if scenarios.of(r).curve_labels_concurrency:
                        ax.annotate(f"c={r['concurrency']}", (x, y), fontsize=SMALL, xytext=(3, 3),
                                    textcoords="offset points")
            _log_y(ax)
            ax.set(title=f"{model} {dtype} batch {bs}", xlabel="throughput (samples/s)",
                   ylabel="p99 request latency (ms)")
            ax.grid(True, which="both", alpha=.3)
            ax.legend()
        fig.tight_layout()
        return [("capacity", f"{model}: p99 request latency vs throughput (offline: c requests in flight; "
                             "server: arrival rates); down and right is better; a red cross marks an invalid "
                             "row (a server run that could not keep its schedule, ...)", _svg(fig))]


def profile_href(r: dict[str, Any], run_dir: str | Path, report_dir: str | Path) -> str | None:
    """The link to a row's profile from a page in ``report_dir``: a relative URL, or None without one."""
    import os
    from urllib.parse import quote

    rel = r.get("profile_file")
    if not rel:
        return None
    target = Path(run_dir).resolve() / rel
    return quote(Path(os.path.relpath(target, Path(report_dir).resolve())).as_posix())


def _html_table(summary: list[dict[str, Any]], hrefs: list[str | None] | None = None) -> str:
    cols = columns(summary)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(summary):
        cells = _cells(r, cols)
        first = i == 0 or _group(summary[i - 1]) != _group(r)
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


def _environment(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
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


def html_report(run_dir: str | Path, baseline: str | None = None, report_path: str | Path | None = None) -> str:
    """The whole report of one run directory as one HTML document (no scripts, no external files).

    Trials with a profile link to it (_profiles/ in the run directory), relative to ``report_path``,
    where the page will be written (default: inside the run directory). ``baseline``: see
    :func:`resolve_baseline`."""
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
             + (f" <b>{html.escape(baseline_note)}</b>." if baseline_note else "") + "</p>",
             _html_table(summary, [profile_href(r, run_dir, report_dir) for r in summary])]
    peaks = peak_rows(rows)
    if peaks:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in PEAK_COLUMNS)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in peaks)
        answers = "".join(f"<li>{html.escape(a)}</li>" for a in serving_answers(rows))
        parts.append(f"<h2>Peak rate within the p99 bound</h2><p>{_peak_names()}: the highest arrival rate (Poisson "
                     "unless constant) whose p99 request latency stayed within the bound, found by bisection "
                     "between server runs; the bracket is the highest rate that passed and the lowest that failed."
                     f"</p><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"
                     + (f"<ul>{answers}</ul>" if answers else ""))
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    loaded: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        section = scenarios.of(r).report
        if section == "latency":
            by_model[str(r.get("model"))].append(r)
        elif section == "capacity":
            loaded[str(r.get("model"))].append(r)
    try:
        figures = [p for model in sorted(by_model) for p in _plots(model, by_model[model])]
        figures += [p for model in sorted(loaded) for p in _curves(model, loaded[model])]
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
    parts.append("<h2>Environment</h2>" + _environment(rows, info))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
