"""The HTML report's plots, as inline SVG (matplotlib, imported only when a page is drawn): per model,
latency and throughput against batch size and each trial's distribution (the default scenario's rows),
and p99 latency against throughput (the load scenarios' rows). An invalid row is marked in every plot."""

from __future__ import annotations

import io as _io
from collections import defaultdict
from typing import Any

from orchestrator.answers.tables import axes_text, invalid
from workers import scenarios
from workers.contract import Status
from workers.row import Row

#: A series' colour (an RGBA tuple of matplotlib's ``tab10``), by series name.
Colors = dict[str, tuple[float, float, float, float]]

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


def _series(rows: list[Row]) -> tuple[dict[str, list[Row]], Colors]:
    """ok rows of one model by series, and colours. A series is a label, plus what else the rows
    differ in that the tables group by: the io where the model ran with several, its axes (seq=128)
    where it ran with several: a line never joins two of them."""
    from matplotlib import colormaps

    several_io = len({r.get("io") for r in rows}) > 1
    several_axes = len({r.get("axes") or "" for r in rows}) > 1
    series: dict[str, list[Row]] = defaultdict(list)
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


def _latency_figure(model: str, series: dict[str, list[Row]], colors: Colors,
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


def _throughput_figure(model: str, series: dict[str, list[Row]], colors: Colors,
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


def _distribution_figure(model: str, series: dict[str, list[Row]], colors: Colors,
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


def plots(model: str, rows: list[Row]) -> list[tuple[str, str, str]]:
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


def curves(model: str, rows: list[Row]) -> list[tuple[str, str, str]]:
    """(section, caption, svg): p99 request latency against throughput, one line per label (and io,
    axes, scenario), one panel per dtype and batch size; offline points are labelled with their
    concurrency, invalid points marked."""
    import matplotlib

    ok = [r for r in rows if r.get("status") == Status.OK and r.get("throughput") and r.get("latency_ms_p99")]
    if not ok:
        return []
    panels = sorted({(r["dtype"], r["batch_size"]) for r in ok})
    several_axes = len({r.get("axes") or "" for r in ok}) > 1
    lines: dict[str, list[Row]] = defaultdict(list)
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
