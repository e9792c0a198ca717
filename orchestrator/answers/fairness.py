"""What two rows compared side by side had in common, and what not.

A speedup is a fair answer only where both rows did the same work: the same fp32 arithmetic
(``math_effective``, read back from the libraries; a row of a run older than the column reads as
"library default"), the same io, the same inputs (``input_pool``, ``pool_feed``), the same model
through the same route (``export_route``; a torch backend runs the model itself) and the same kind
of execution (a captured graph or engine replayed, or not: ``stale_reference`` is set exactly for
the backends that replay one, where parity is checked). ``report`` prints, for every group it compares, one line saying
which of these were equal and which were not, marks the rows whose math differs from the others
of their group, and ``compare`` gives no verdict across different effective math.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from workers.contract import Status
from workers.measure import mathmode
from workers.row import Row


def math_of(r: Row) -> str:
    """A row's effective fp32 math as text ("n/a" for fp16/bf16 rows)."""
    return mathmode.read(r) if r.get("dtype") == "fp32" else "n/a"


def _inputs(r: Row) -> str:
    n = r.get("input_pool") or 1
    return "one input" if n == 1 else f"a pool of {n} ({r.get('pool_feed')})"


def _route(r: Row) -> str:
    return r.get("export_route") or "the model itself (torch)"


def _capture(r: Row) -> str:
    """From the stale-output check, which runs exactly where something captured is replayed (and
    parity is checked: without it, unknown)."""
    if r.get("stale_reference"):
        return "replayed (graph or engine)"
    return "not replayed" if r.get("parity_reference") else "not recorded"


#: (what, how a row says it) for each aspect the fairness line names.
ASPECTS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("math", math_of), ("io", lambda r: str(r.get("io"))), ("inputs", _inputs),
    ("exporter route", _route), ("graph capture", _capture))


def fairness_line(rows: list[Row]) -> str | None:
    """``equal: math tf32, io device, ...; not equal: exporter route (a / b)`` for the ok rows of one
    group; None with fewer than two."""
    ok = [r for r in rows if r.get("status") == Status.OK]
    if len(ok) < 2:
        return None
    same, differ = [], []
    for what, how in ASPECTS:
        values = list(dict.fromkeys(how(r) for r in ok))
        if len(values) == 1:
            same.append(f"{what} {values[0]}")
        else:
            differ.append(f"{what} ({' / '.join(values)})")
    return f"equal: {', '.join(same) or 'nothing'}; not equal: {', '.join(differ) or 'nothing'}"


def group_lines(rows: list[Row], group: Callable[[Row], Any], title: Callable[[Row], str]) -> list[str]:
    """One fairness line per group of ``rows`` with two ok rows or more, titled by ``title`` of its first row."""
    groups: dict[Any, list[Row]] = defaultdict(list)
    for r in rows:
        groups[group(r)].append(r)
    out = []
    for members in groups.values():
        line = fairness_line(members)
        if line is not None:
            out.append(f"{title(members[0])}: {line}")
    return out


def math_marks(rows: list[Row], group: Callable[[Row], Any]) -> dict[int, str]:
    """``{id(row): note}`` for every ok fp32 row whose group holds rows of different effective math."""
    groups: dict[Any, list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("status") == Status.OK and r.get("dtype") == "fp32":
            groups[group(r)].append(r)
    marks = {}
    for members in groups.values():
        if len({math_of(r) for r in members}) > 1:
            marks.update({id(r): f"math: {math_of(r)}" for r in members})
    return marks


MATH_NOTE = ("Rows marked 'math: ...' ran different fp32 arithmetic from others of their group (TF32 or IEEE "
             "fp32, as the libraries report it): their speedups compare the math as much as the backends; "
             "set matrix.math to compare like with like.")


def math_mismatch(base: Row, cand: Row) -> str | None:
    """Why two rows can't be judged against each other for their math, or None. A row of a run
    older than ``math_effective`` is "library default"; two rows of the same trial id asked for the
    same math (the id hashes it), so a missing record on one side is no mismatch there."""
    if base.get("dtype") != "fp32" or cand.get("dtype") != "fp32":
        return None
    b, c = math_of(base), math_of(cand)
    if b == c:
        return None
    if base.get("trial_id") == cand.get("trial_id") and mathmode.LIBRARY_DEFAULT in (b, c):
        return None
    return f"different fp32 math: base {b}, candidate {c}"
