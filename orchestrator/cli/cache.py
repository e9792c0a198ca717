"""``infer-orch cache``: what the cache of exports, builds and compiles holds on this machine, or on
every node of a Ray cluster (``--address``), and ``--clear`` to remove it.

The cache (``$INFER_ORCH_CACHE``, else ``~/.cache/infer-orch``, on each node) is content-keyed:
ONNX exports (``onnx``), ORT GenAI's decoder builds (``genai``), Inductor's and TensorRT's caches,
the files a run shipped to the node (``shipped``). Nothing in it is ever needed again by a finished
run: clearing only costs the next run the time to build it again. An artifact whose build holds its
lock is kept (a run is building it), but a running run's shipped files and compile caches hold no
lock: clear between runs. The work is ``workers.models.cache.report``, run where the cache is.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.errors import InferOrchError, InputError


def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Remove what is listed; artifacts being built stay.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Only this part of the cache (repeatable): onnx, genai, inductor, tensorrt, shipped, ...")
    ] = None,
    address: Annotated[str | None, typer.Option(
        help="Every node of this Ray cluster ('auto' or ray://host:10001); default: this machine.")] = None,
) -> None:
    """The cache of exports, builds and compiles: what it holds; --clear removes it (between runs)."""
    try:
        reports = _on_nodes(address, kind, clear) if address else [_here(kind, clear)]
    except InferOrchError as exc:
        raise fail(exc) from None
    for r in reports:
        if r["unknown"]:
            raise fail(InputError(f"--kind {r['unknown'][0]}: not in the cache at {r['root']} on {r['host']}; "
                                  f"it holds: {', '.join(r['held']) or 'nothing'}"))
    many = len(reports) > 1
    t = Table()
    for col in (["node"] if many else []) + ["kind", "entries", "size"]:
        t.add_column(col, justify="left" if col in ("node", "kind") else "right")
    for r in reports:
        for row in r["rows"]:
            t.add_row(*([r["host"]] if many else []), row["kind"], str(row["entries"]), _human(row["bytes"]))
    t.add_row(*([""] if many else []), "total", "", _human(sum(r["bytes"] for r in reports)))
    if not any(r["rows"] for r in reports):
        console.print("Nothing cached at " + ", ".join(f"{r['root']} on {r['host']}" if many else r["root"]
                                                      for r in reports) + ".", highlight=False)
        return
    for r in reports:
        console.print(f"Cache on {r['host']}: {r['root']}" if many else f"Cache: {r['root']}", highlight=False,
                      soft_wrap=True)
    console.print(t)
    if clear:
        kept = [p for r in reports for p in r["kept"]]
        freed = sum(r["bytes"] - r["kept_bytes"] for r in reports)
        console.print(f"Cleared {_human(freed)}"
                      + (f"; kept {len(kept)} being built or not removable: {', '.join(kept)}" if kept else "."),
                      highlight=False)


def _here(kind: list[str] | None, clear: bool) -> dict[str, Any]:
    from workers.models.cache import report

    return report(kind, clear)


def _on_nodes(address: str, kind: list[str] | None, clear: bool) -> list[dict[str, Any]]:
    """``report`` in a task on every alive node of the cluster at ``address``, pinned there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from orchestrator.run import cluster, placement
    from workers.models.cache import report

    started = cluster.connect(address)
    try:
        task = ray.remote(num_cpus=0)(report)
        pinned = [NodeAffinitySchedulingStrategy(n.node_id, soft=False) for n in placement.nodes()]
        reports = ray.get([task.options(scheduling_strategy=p).remote(kind, clear) for p in pinned])
    finally:
        if started:
            ray.shutdown()
    seen: dict[tuple[str, str], dict[str, Any]] = {}  # nodes of one host sharing one cache: listed once
    for r in reports:
        seen.setdefault((r["host"], r["root"]), r)
    return list(seen.values())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
