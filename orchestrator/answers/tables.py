"""The answers of a run as tables: every trial side by side with its speedup against a baseline, and the
peak rates of the find-peak rows with which label serves the most (see ``orchestrator.answers.report``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rich.markup import escape
from rich.table import Table

from orchestrator.answers.fairness import MATH_NOTE, group_lines, math_marks
from workers import scenarios
from workers.contract import Status
from workers.row import Row
from workers.scenarios import label as scenario_label
from workers.scenarios import tag as scenario_tag

DEFAULT_BASELINE = "torch-eager"
GROUP = ("model", "axes", "batch_size", "dtype", "io")
STATUS_STYLE = {Status.OK: "green", Status.SKIPPED: "yellow"}
ENV_COLUMNS = ("device", "device_name", "node", "torch_version", "ort_version", "cuda_version", "driver_version")


class Summarized(Row, total=False):
    """A row as the tables show it: with its speedup against the baseline."""

    speedup: float | None  # the baseline's figure / this row's (higher is better); None without one
    speedup_vs: str | None  # ``vs io=host``: taken against the baseline of the other io
    math_note: str | None  # ``math: tf32``: its group holds rows of other fp32 math (answers/fairness.py)


def group(r: Row) -> tuple[Any, ...]:
    """(model, axes, batch, dtype, io, scenario tag): a row's group in the table."""
    return (*(r.get(k) for k in GROUP), scenario_tag(r))


def _wide(r: Row) -> tuple[Any, ...]:
    """The group without io: where a baseline is looked for when the row's own group has none."""
    g = group(r)
    return (*g[:4], g[5])


def _order(r: Row, baseline: str) -> tuple[Any, ...]:
    return (str(r.get("model")), str(r.get("axes") or ""), r.get("batch_size") or 0, str(r.get("dtype")),
            str(r.get("io")), scenario_tag(r), r.get("label") != baseline, str(r.get("label")))


def speed(r: Row) -> float | None:
    """The figure a row's speedup compares, higher is better: its scenario's first figure (a latency
    inverted)."""
    return scenarios.of(r).figures_of(r)[0].speed(r)


def _is_baseline(r: Row, baseline: str) -> bool:
    return r.get("status") == Status.OK and (r.get("label") == baseline or r.get("backend") == baseline)


def _pick_baseline(rows: Iterable[Row], baseline: str) -> Row | None:
    found = [r for r in rows if _is_baseline(r, baseline)]
    # a label equal to the baseline wins over a backend equal to it (torch-eager vs torch-eager-cl)
    found.sort(key=lambda r: (r.get("label") != baseline, r.get("label") != r.get("backend")))
    return found[0] if found else None


def resolve_baseline(rows: list[Row], asked: str | None = None) -> tuple[str, str]:
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


def summarize(rows: list[Row], baseline: str = DEFAULT_BASELINE) -> list[Summarized]:
    """Rows sorted by group and label, each with ``speedup`` (or None) and ``speedup_vs`` (io note)."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    wide: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[group(r)].append(r)
        wide[_wide(r)].append(r)
    out: list[Summarized] = []
    marks = math_marks(rows, group)
    for r in sorted(rows, key=lambda r: _order(r, baseline)):
        base, vs = _pick_baseline(groups[group(r)], baseline), None
        if base is None:
            base = _pick_baseline(wide[_wide(r)], baseline)
            vs = base and f"vs io={base.get('io')}"
        speedup = None
        if base is not None and r.get("status") == Status.OK and speed(r) and speed(base):
            speedup = speed(r) / speed(base)
        out.append({**r, "speedup": speedup, "speedup_vs": vs if speedup is not None else None,
                    "math_note": marks.get(id(r))})
    return out


def fairness_lines(rows: list[Row]) -> list[str]:
    """Under the table: the math note where a group mixes fp32 math, then each compared group's
    fairness line (what its rows had in common and what not: ``orchestrator.answers.fairness``)."""
    def title(r: Row) -> str:
        tag = scenario_tag(r)
        return (f"fairness, {r.get('model')} {axes_text(r)} batch {r.get('batch_size')} {r.get('dtype')} "
                f"io {r.get('io')}{' ' + tag if tag else ''}").replace("  ", " ")

    head = [MATH_NOTE] if math_marks(rows, group) else []
    return head + group_lines(rows, group, title)


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _speedup(r: Summarized) -> str:
    if r["speedup"] is None:
        return "-"
    return f"{r['speedup']:.2f}x" + (f" ({r['speedup_vs']})" if r["speedup_vs"] else "")


#: The parity figures a row's note shows (not every ``parity_*`` column: ``parity_s`` is a time).
PARITY_NOTE = ("parity_max_abs_err", "parity_max_rel_err")


def invalid(r: Row) -> bool:
    """An ok row that is not a number to act on (workers/measure/validity.py): every view says so."""
    return r.get("status") == Status.OK and r.get("valid") is False


def status_text(r: Row) -> str:
    """The status as every view of a row shows it: ``ok, invalid`` for an ok row that is not valid."""
    return "ok, invalid" if invalid(r) else str(r.get("status"))


def unregistered_note(rows: Iterable[Row]) -> str:
    """Which rows' scenarios are not registered here and how they are shown; empty when there are none."""
    names = sorted({str(r.get("scenario")) for r in rows if not scenarios.is_registered(r)})
    if not names:
        return ""
    return (f"scenario {', '.join(names)} is not registered here (a run made with a scenario of its own): its rows "
            f"are judged on the {scenarios.DEFAULT} scenario's figures and shown in the tables only")


def counts_text(rows: list[Row]) -> str:
    """``3 ok, 1 ok but invalid, 2 skipped``: the statuses, the invalid ok rows counted apart."""
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts["ok but invalid" if invalid(r) else str(r.get("status"))] += 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _note(r: Row) -> str:
    if r.get("status") != Status.OK:
        return (r.get("error") or "").strip().splitlines()[0][:100] if r.get("error") else ""
    notes = ["invalid: " + "; ".join(r.get("invalid_reasons") or ["see valid"])] if invalid(r) else []
    notes += [r["math_note"]] if r.get("math_note") else []  # type: ignore[typeddict-item]
    notes += [f"{k}={r[k]:.3g}" for k in PARITY_NOTE if isinstance(r.get(k), float)]
    if r.get("hit_max_time"):
        notes.append("hit max_time_s")
    if r.get("profile_error"):
        notes.append(f"no profile: {r['profile_error']}"[:100])
    return ", ".join(notes)


COLUMNS = ("model", "batch", "dtype", "io", "label", "status", "median ms", "p99 ms", "samples/s", "samples/J",
           "speedup", "note")
NUMERIC = frozenset({"batch", "median ms", "p99 ms", "samples/s", "samples/J", "speedup"})


def axes_text(r: Row) -> str:
    """A row's named axes as ``seq=128 ...`` (the ``axes`` column is JSON text); empty without."""
    raw = r.get("axes")
    return " ".join(f"{k}={v}" for k, v in json.loads(raw).items()) if raw else ""


def columns(summary: list[Summarized]) -> tuple[str, ...]:
    """The table's columns: a scenario column after io where some row has a load scenario."""
    if not any(scenario_tag(r) for r in summary):
        return COLUMNS
    return (*COLUMNS[:4], "scenario", *COLUMNS[4:])


def row_cells(r: Summarized, cols: tuple[str, ...] = COLUMNS) -> list[str]:
    model = f"{r.get('model')} {axes_text(r)}".strip()
    scenario = [scenario_label(r)] if "scenario" in cols else []
    return [model, str(r.get("batch_size")), str(r.get("dtype")), str(r.get("io")), *scenario, str(r.get("label")),
            status_text(r), fmt(r.get("latency_ms_median")), fmt(r.get("latency_ms_p99")),
            fmt(r.get("throughput"), ".1f"), fmt(_per_joule(r), ".1f"), _speedup(r), _note(r)]


def _per_joule(r: Row) -> float | None:
    """Samples per joule of the GPU's energy (null without an energy measurement)."""
    j = r.get("energy_j_per_sample")
    return 1.0 / j if j and r.get("status") == Status.OK else None


def terminal_table(summary: list[Summarized], baseline: str = DEFAULT_BASELINE) -> Table:
    """The summary as a rich Table; a group's keys are printed once, groups are ruled off."""
    t = Table(title=f"Results (speedup vs {baseline})", title_justify="left")
    cols = columns(summary)
    for col in cols:
        t.add_column(col, justify="right" if col in NUMERIC
                     else "left", overflow="fold")
    keys = len(cols) - len(COLUMNS) + 4  # the group's columns, printed once a group
    for i, r in enumerate(summary):
        cells = [escape(c) for c in row_cells(r, cols)]  # errors hold brackets ([tensorrt]) Rich would eat
        first = i == 0 or group(summary[i - 1]) != group(r)
        last = i == len(summary) - 1 or group(summary[i + 1]) != group(r)
        if not first:
            cells[:keys] = [""] * keys
        style = "yellow" if invalid(r) else STATUS_STYLE.get(r.get("status"), "red")
        cells[keys + 1] = f"[{style}]{cells[keys + 1]}[/]"
        t.add_row(*cells, end_section=last)
    return t


# --- find-peak ----------------------------------------------------------------------------------

PEAK_COLUMNS = ("model", "batch", "dtype", "io", "label", "concurrency", "p99 bound ms", "peak req/s",
                "samples/s", "bracket req/s", "p99 ms at peak", "valid")


def peak_rows(rows: list[Row]) -> list[list[str]]:
    """The cells of the find-peak table: one line per find-peak row, by group, highest peak first."""
    found = [r for r in rows if scenarios.of(r).report == "peak"]
    found.sort(key=lambda r: (str(r.get("model")), r.get("batch_size") or 0, str(r.get("dtype")), str(r.get("io")),
                              -(r.get("peak_rate") or 0)))
    out = []
    for r in found:
        ok = r.get("status") == Status.OK
        fail = r.get("peak_rate_fail")
        bracket = f"{fmt(r.get('peak_rate'), '.1f')} - {fmt(fail, '.1f')}" if ok else "-"
        out.append([f"{r.get('model')} {axes_text(r)}".strip(), str(r.get("batch_size")), str(r.get("dtype")),
                    str(r.get("io")), str(r.get("label")), str(r.get("concurrency")),
                    fmt(r.get("latency_bound_ms"), "g"), fmt(r.get("peak_rate"), ".1f") if ok else str(r["status"]),
                    fmt(r.get("throughput"), ".1f"), bracket,
                    fmt(r.get("ttft_ms_p99") if r.get("new_tokens") else r.get("latency_ms_p99")),
                    "-" if r.get("valid") is None else "yes" if r["valid"] else "no: " + "; ".join(
                        r.get("invalid_reasons") or [])])
    return out


def serving_answers(rows: list[Row]) -> list[str]:
    """Per model, batch size and dtype with find-peak rows: which label serves the most requests/s
    within the bound, next to which has the lowest single-request latency, and whether they differ."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("status") == Status.OK:
            shape = f"{r['prompt_len']}+{r['new_tokens']}" if r.get("new_tokens") else ""  # a generation's
            groups[(str(r.get("model")), f"{axes_text(r)} {shape}".strip(), r.get("batch_size"),
                    str(r.get("dtype")))].append(r)
    out = []
    for (model, axes, bs, dtype), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        peaks = [r for r in rs if scenarios.of(r).report == "peak" and r.get("peak_rate")]
        singles = [r for r in rs if scenarios.of(r).report == "latency" and r.get("latency_ms_median")]
        if not peaks:
            continue
        best = max(peaks, key=lambda r: r["peak_rate"])
        what = f"{model} {axes} batch {bs} {dtype}".replace("  ", " ")
        bound = f"p99 <= {best['latency_bound_ms']:g} ms"
        if best.get("new_tokens"):  # a generation's two bounds
            bound = f"TTFT {bound}" + (f" and TPOT p99 <= {best['tpot_bound_ms']:g} ms" if best.get("tpot_bound_ms")
                                       else "")
        line = (f"{what}: most requests/s at {bound}: {best['label']} "
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


def peak_names() -> str:
    """The scenarios whose rows go to the peak table."""
    return " / ".join(n for n in scenarios.names() if scenarios.get(n).report == "peak")


def peak_table(rows: list[Row]) -> Table | None:
    """The find-peak table for the terminal, or None when the run has no find-peak rows."""
    cells = peak_rows(rows)
    if not cells:
        return None
    t = Table(title=f"Peak rate within the p99 bound ({peak_names()})", title_justify="left")
    for col in PEAK_COLUMNS:
        t.add_column(col, justify="right" if col not in ("model", "dtype", "io", "label", "valid") else "left")
    for c in cells:
        t.add_row(*(escape(x) for x in c))
    return t
