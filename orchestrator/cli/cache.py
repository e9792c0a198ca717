"""``infer-orch cache``: what this machine's cache of exports, builds and compiles holds, and
``--clear`` to remove it.

The cache (``$INFER_ORCH_CACHE``, else ``~/.cache/infer-orch``) is per node and content-keyed: ONNX
exports (``onnx``), ORT GenAI's decoder builds (``genai``), Inductor's and TensorRT's caches, the
files a run shipped to the node (``shipped``). Nothing in it is ever needed again by a finished run:
clearing only costs the next run the time to build it again. An artifact whose build holds its
lock is kept (a run on this machine is building it), but a running run's shipped files and compile
caches hold no lock: clear between runs. On a cluster, run it on each node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.errors import InputError


def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Remove what is listed; artifacts being built stay.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Only this part of the cache (repeatable): onnx, genai, inductor, tensorrt, shipped, ...")
    ] = None,
) -> None:
    """This machine's cache of exports, builds and compiles: what it holds; --clear removes it (between runs)."""
    from workers.models.build import cache_dir

    root = cache_dir()
    kinds = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    unknown = [k for k in kind or [] if k not in kinds]
    if unknown:
        raise fail(InputError(f"--kind {unknown[0]}: not in the cache at {root}; it holds: "
                              f"{', '.join(kinds) or 'nothing'}"))
    chosen = kind or kinds
    if not chosen:
        console.print(f"Nothing cached at {root}.", highlight=False)
        return
    t = Table(title=f"Cache: {root}", title_justify="left")
    for col, justify in (("kind", "left"), ("entries", "right"), ("size", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    total, kept = 0, []
    for k in chosen:
        entries = [p for p in sorted((root / k).iterdir()) if not p.name.endswith(".lock")]
        size = sum(_size(p) for p in entries)
        total += size
        t.add_row(k, str(len(entries)), _human(size))
        if clear:
            kept += [p for p in entries if not _removed(p)]
    t.add_row("total", "", _human(total))
    console.print(t)
    if clear:
        left = sum(_size(p) for p in kept)
        console.print(f"Cleared {_human(total - left)}"
                      + (f"; kept {len(kept)} being built or not removable: {', '.join(str(p) for p in kept)}"
                         if kept else "."),
                      highlight=False)


def _removed(path: Path) -> bool:
    from workers.models.artifacts import remove

    try:
        return remove(path)
    except OSError:  # not ours to remove (permissions): listed as kept
        return False


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except FileNotFoundError:
            return 0
    n = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                n += os.lstat(os.path.join(base, f)).st_size
            except FileNotFoundError:
                pass
    return n


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
