"""``infer-orch cache``: what the cache of exports, builds and compiles holds on this machine, or on
every node of a Ray cluster (``--address``), and ``--clear`` to remove it.

The cache (``$INFER_ORCH_CACHE``, else ``$XDG_CACHE_HOME/infer-orch`` or ``~/.cache/infer-orch``, on
each node) is content-keyed, a folder per kind (``workers.models.cache.KINDS``): ONNX exports
(``onnx``), ORT GenAI's decoder builds (``genai``), Inductor's and TensorRT's caches, the files a run
shipped to the node (``shipped``). Nothing in it is needed again by a finished run: clearing only
costs the next run the time to build it again. A running run's files hold no lock except a build in
progress (kept): clear between runs. Folders of others under the same root are listed, never cleared.
The work is ``workers.models.cache.report``, run where the cache is: first to list, then to clear.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.errors import ClusterError, InferOrchError, InputError


def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Remove what is listed; artifacts being built stay.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Only this part of the cache (repeatable): onnx, genai, inductor, tensorrt, shipped, sleep")
    ] = None,
    address: Annotated[str | None, typer.Option(
        help="Every node of this Ray cluster ('auto' or ray://host:10001); default: this machine.")] = None,
) -> None:
    """The cache of exports, builds and compiles: what it holds; --clear removes it (between runs)."""
    from workers.models.cache import KINDS

    try:
        bad = [k for k in kind or [] if k not in KINDS]
        if bad:
            raise InputError(f"--kind {bad[0]}: not a part of infer-orch's cache; accepted: {', '.join(KINDS)}")
        listed, cleared = _on_nodes(address, kind, clear) if address else _here(kind, clear)
    except InferOrchError as exc:
        raise fail(exc) from None
    _print(listed, cleared, clear)


def _print(listed: list[dict[str, Any]], cleared: list[dict[str, Any]], clear: bool) -> None:
    many = len(listed) > 1
    if not any(r["rows"] for r in listed):
        console.print(f"Nothing cached at {escape(_where(listed))}.", highlight=False)
        return
    t = Table()
    for col in (["node"] if many else []) + ["kind", "entries", "size"]:
        t.add_column(col, justify="left" if col in ("node", "kind") else "right")
    for r in listed:
        console.print(escape(f"Cache on {r['host']}: {r['root']}" if many else f"Cache: {r['root']}"),
                      highlight=False, soft_wrap=True)
        for row in r["rows"]:
            t.add_row(*([escape(r["host"])] if many else []), row["kind"], str(row["entries"]), _human(row["bytes"]))
    t.add_row(*([""] if many else []), "total", "", _human(sum(r["bytes"] for r in listed)))
    console.print(t)
    others = sorted({o for r in listed for o in r["others"]})
    if others:
        console.print(escape(f"Also there, not infer-orch's (never cleared): {', '.join(others)}"), highlight=False)
    if clear:
        kept = [p for r in cleared for p in r["kept"]]
        console.print(escape(f"Cleared {_human(sum(r['freed'] for r in cleared))}"
                             + (f"; kept {len(kept)} being built or not removable: {', '.join(kept)}" if kept
                                else ".")), highlight=False, soft_wrap=True)


def _where(reports: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['root']} on {r['host']}" if len(reports) > 1 else r["root"] for r in reports)


def _check(reports: list[dict[str, Any]], kind: list[str] | None) -> None:
    """A cache that could not be read, or a kind asked that no cache holds: the command's one line."""
    for r in reports:
        if r["error"]:
            raise InputError(f"can't read the cache at {r['root']} on {r['host']}: {r['error']}")
    held = sorted({k for r in reports for k in r["held"]})
    missing = [k for k in kind or [] if k not in held]
    if missing:
        raise InputError(f"--kind {missing[0]}: not in the cache at {_where(reports)}; it holds: "
                         f"{', '.join(held) or 'nothing'}")


def _here(kind: list[str] | None, clear: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(this machine's cache listed, then cleared where asked) once the listing passed ``_check``."""
    from workers.models.cache import report

    listed = [report(kind)]
    _check(listed, kind)
    cleared = [report(kind, clear=True)] if clear else []
    _check(cleared, None)
    return listed, cleared


def _on_nodes(address: str, kind: list[str] | None,
              clear: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """As ``_here``, on the cluster at ``address``: ``report`` in a task pinned to each alive node, every
    node listed before any clears; one node per (node IP, cache root) listed and cleared (nodes of one
    machine sharing one cache)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from orchestrator.run import cluster, placement
    from workers.models.cache import report

    started = cluster.connect(address)
    try:
        task = ray.remote(num_cpus=0)(report)
        nodes = placement.nodes()
        pinned = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                  for n in nodes]
        reports = ray.get([t.remote(kind, False) for t in pinned])
        first: dict[tuple[str, str], int] = {}
        for i, (n, r) in enumerate(zip(nodes, reports, strict=True)):
            first.setdefault((n.ip or n.host, r["root"]), i)
        listed = [reports[i] for i in first.values()]
        _check(listed, kind)
        cleared = ray.get([pinned[i].remote(kind, True) for i in first.values()]) if clear else []
        _check(cleared, None)
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"a node's cache task failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        if started:
            ray.shutdown()
    return listed, cleared


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
