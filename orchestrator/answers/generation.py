"""The generation table of a run: per model and shape (prompt + new tokens, batch, dtype) and load
scenario, each backend's requests/s, time to first token, time per output token, tokens/s and
roofline fraction, fastest TPOT first, and which backend does best on the scenario's first figure by
how much (one generation at a time: the time per output token; see ``orchestrator.answers.report``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.markup import escape
from rich.table import Table

from orchestrator.answers.tables import DEFAULT_BASELINE, fmt
from workers import scenarios
from workers.contract import Status
from workers.row import Row

COLUMNS = ("model", "prompt+new", "batch", "dtype", "scenario", "label", "req/s", "TTFT ms", "TTFT p99 ms",
           "TPOT ms", "TPOT p99 ms", "tokens/s", "roofline", "agreement", "clock", "status")
_TEXT = ("model", "prompt+new", "dtype", "scenario", "label", "clock", "status")


def _load(r: Row) -> str:
    """The row's load scenario in a few words (``offline c=4``); empty for one generation at a time."""
    return scenarios.tag(r) if scenarios.of(r).uses_lanes else ""


def _shape(r: Row) -> tuple[Any, ...]:
    return (str(r.get("model")), r.get("prompt_len") or 0, r.get("new_tokens") or 0, r.get("batch_size") or 0,
            str(r.get("dtype")), _load(r))


def generation_rows(rows: list[Row]) -> list[Row]:
    """The run's generation rows (those with new_tokens), by shape, fastest time per output token first."""
    found = [r for r in rows if r.get("new_tokens")]
    return sorted(found, key=lambda r: (*_shape(r), r.get("tpot_ms") is None, r.get("tpot_ms") or 0,
                                        str(r.get("label"))))


def _status(r: Row) -> str:
    if r.get("status") != Status.OK:
        return f"{r.get('status')}: {(r.get('error') or '').splitlines()[0][:80]}" if r.get("error") else str(
            r.get("status"))
    return "ok" if r.get("valid") is not False else "ok, invalid: " + "; ".join(r.get("invalid_reasons") or [])


def cells(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in generation_rows(rows):
        roof = r.get("roofline_frac")
        agree = r.get("token_agreement")
        rate = r.get("peak_rate") if r.get("peak_rate") is not None else r.get("achieved_rate")
        out.append([str(r.get("model")), f"{r.get('prompt_len')}+{r.get('new_tokens')}", str(r.get("batch_size")),
                     str(r.get("dtype")), _load(r) or str(r.get("scenario") or "-"), str(r.get("label")),
                     fmt(rate, ".1f"), fmt(r.get("ttft_ms")), fmt(r.get("ttft_ms_p99")), fmt(r.get("tpot_ms")),
                     fmt(r.get("tpot_ms_p99")), fmt(r.get("tokens_per_s"), ".1f"),
                     "-" if roof is None else f"{roof:.0%}", "-" if agree is None else f"{agree:.0%}",
                     str(r.get("generation_clock") or "-"), _status(r)])
    return out


def answers(rows: list[Row]) -> list[str]:
    """Per shape and load scenario with two or more ok rows: the backend best on the scenario's first
    figure (one generation at a time: the lowest time per output token), by how much against the next,
    and against the default baseline (torch eager) where it ran."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in generation_rows(rows):
        if r.get("status") == Status.OK and scenarios.of(r).figures_of(r)[0].speed(r):
            groups[_shape(r)].append(r)
    out = []
    for (model, p, n, bs, dtype, load), rs in groups.items():
        if len(rs) < 2:
            continue
        fig = scenarios.of(rs[0]).figures_of(rs[0])[0]
        best, second, *_ = rs = sorted(rs, key=lambda r: -fig.speed(r))  # type: ignore[operator]
        what = "fastest per output token" if fig.column == "tpot_ms" else f"best {fig.label}"
        value = f"{fig.value(best):.3f} ms" if fig.better == "lower" else f"{fig.value(best):.1f} {fig.label}"
        line = (f"{model} {p}+{n} batch {bs} {dtype}{' ' + load if load else ''}: {what}: {best['label']} {value}, "
                f"{fig.speed(best) / fig.speed(second):.2f}x {second['label']}")  # type: ignore[operator]
        base = next((r for r in rs if DEFAULT_BASELINE in (r.get("label"), r.get("backend"))), None)
        if base is not None and base is not best and base is not second:
            line += f", {fig.speed(best) / fig.speed(base):.2f}x {base['label']}"  # type: ignore[operator]
        out.append(line)
    return out


def generation_table(rows: list[Row]) -> Table | None:
    """The generation table for the terminal, or None when the run has no generation rows."""
    found = cells(rows)
    if not found:
        return None
    t = Table(title="Generation (TTFT: prefill + first token, under server from the scheduled arrival; TPOT: "
                    "median decode step)", title_justify="left")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in _TEXT else "right")
    for c in found:
        t.add_row(*(escape(x) for x in c))
    return t


def generation_html(rows: list[Row]) -> str:
    """The generation section of the HTML report ('' without generation rows)."""
    import html

    found = cells(rows)
    if not found:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in found)
    lis = "".join(f"<li>{html.escape(a)}</li>" for a in answers(rows))
    return ("<h2>Generation</h2><p>TTFT: time to first token (prefill + first token; under server, from the "
            "request's scheduled arrival); req/s: requests (generations) per second under load; TPOT: time per output "
            "token, the median decode step; tokens/s: batch x new tokens over a whole generation; roofline: the "
            "bytes a decode step reads over its time, as a share of the GPU's measured copy bandwidth.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>" + (f"<ul>{lis}</ul>" if lis else ""))
