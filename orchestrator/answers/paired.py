"""Interleaved A/B within one run: each arm's paired ratio to its unit's base (``measure.interleave``).

The worker wrote the ratio, its interval and verdict into each arm's row (``workers.measure.paired``:
a t interval on the rounds' log ratios, the verdict beyond ``interleave.threshold`` with the interval
clear of 1); this module lists them for ``report`` (terminal and HTML) and ``compare`` (which judges
the candidate run's units within it, and fails on a regressed arm as on a regressed trial).
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any, TypedDict

from workers import scenarios
from workers.row import Row


class Paired(TypedDict):
    model: str
    batch_size: int
    dtype: str
    io: str
    arm: str
    base: str
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    rounds: int | None
    runners_kept: bool | None
    builds: int | None
    device: str | None
    status: str


def items(rows: list[Row]) -> list[Paired]:
    """Every arm of an interleaved unit but its base, in the rows' order; an arm whose unit did not
    measure gets its status as verdict (broken, skipped ...), never a ratio."""
    out: list[Paired] = []
    for r in rows:
        if not scenarios.of(r).interleaves or (r.get("arm") or r.get("label")) == r.get("ab_base"):
            continue
        if r.get("status") == "ok" and r.get("ab_base") is None:
            continue  # a unit of one arm (others kept by a resumed run): nothing to pair with
        ok = r.get("status") == "ok"
        out.append({"model": r.get("model"), "batch_size": r.get("batch_size"), "dtype": r.get("dtype"),
                    "io": r.get("io"), "arm": r.get("arm") or r.get("label"), "base": r.get("ab_base") or "",
                    "ratio": r.get("ab_ratio"), "ci_low": r.get("ab_ratio_low"), "ci_high": r.get("ab_ratio_high"),
                    "verdict": (r.get("ab_verdict") or "not judged") if ok else str(r.get("status")),
                    "rounds": r.get("ab_rounds"), "runners_kept": r.get("ab_runners_kept"),
                    "builds": r.get("ab_setups"), "device": r.get("device"), "status": str(r.get("status"))})
    return out


def regressions(found: list[Paired]) -> list[Paired]:
    return [i for i in found if i["verdict"] == "regressed"]


def note(i: Paired) -> str:
    """How the arm's runners were built, which decides what its interval holds (docs/measuring.md,
    "Builds"): rebuilt every round, built for each of several blocks, or once, where on a GPU two
    builds of one configuration can differ by more than the rounds see."""
    if i["runners_kept"] is False:
        return "runners rebuilt each round (memory)"
    if (i["builds"] or 1) > 1:
        return f"{i['builds']} builds, the interval's units"
    if i["device"] == "cuda" and i["ratio"] is not None:
        return "one build: set interleave.builds to judge across builds"
    return ""


def _cells(i: Paired) -> list[str]:
    ci = "-" if i["ci_low"] is None else f"{i['ci_low']:.4f}-{i['ci_high']:.4f}"
    kept = note(i)
    return [str(i["model"]), str(i["batch_size"]), str(i["dtype"]), str(i["io"]), i["base"], i["arm"],
            "-" if i["ratio"] is None else f"{i['ratio']:.4f}", ci, i["verdict"], str(i["rounds"] or "-"), kept]


HEADERS = ("model", "batch", "dtype", "io", "base", "arm", "ratio", "interval", "verdict", "rounds", "note")
TITLE = "Interleaved A/B (paired ratio of per-round medians, arm / base: > 1 is slower)"


def table(rows: list[Row], title: str = TITLE) -> Any:
    """A Rich table of ``items(rows)``, or None where the run has no interleaved units."""
    found = items(rows)
    if not found:
        return None
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="right" if h in ("batch", "ratio", "rounds") else "left")
    style = {"regressed": "bold red", "improved": "green"}
    for i in found:
        cells = [escape(c) for c in _cells(i)]
        v = i["verdict"]
        cells[8] = f"[{style[v]}]{v}[/]" if v in style else v
        t.add_row(*cells)
    return t


def lines(rows: list[Row]) -> list[str]:
    """One line: the verdicts of the interleaved arms."""
    found = items(rows)
    if not found:
        return []
    counts = Counter(i["verdict"] for i in found)
    return [f"interleaved arms: {', '.join(f'{n} {v}' for v, n in counts.most_common())} (each against its "
            "unit's base within this run; docs/reports.md, \"Which design answers which question\")"]


def html_section(rows: list[Row]) -> str:
    found = items(rows)
    if not found:
        return ""
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(i)) + "</tr>" for i in found)
    return (f"<h2>Interleaved A/B</h2><p>{html.escape(TITLE)}: the arms of each unit were timed in alternating "
            "rounds in one worker process; the interval is a t interval over the rounds, or over the builds "
            "where each arm was built for several blocks of rounds (the note says which).</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
