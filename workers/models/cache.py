"""A node's cache as ``infer-orch cache`` sees it: what each kind holds, and clearing it.

The cache (``workers.models.build.cache_dir``) is a folder per kind: ONNX exports (``onnx``), ORT
GenAI's decoder builds (``genai``), Inductor's and TensorRT's caches, the files runs shipped to the
node (``shipped``). :func:`report` runs where the cache is: in the command's process for this
machine, in a task on each node for a cluster.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def report(kinds: list[str] | None = None, clear: bool = False) -> dict[str, Any]:
    """This node's cache: its root, the kinds it holds, per kind asked (default all) the entries and
    bytes, the kinds asked it does not hold, and with ``clear`` what was removed and what was kept
    (an artifact whose build holds its lock, or one not ours to remove)."""
    from workers.models.build import cache_dir

    root = cache_dir()
    held = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    unknown = [k for k in kinds or [] if k not in held]
    rows, kept, total = [], [], 0
    if not unknown:
        for k in kinds or held:
            entries = [p for p in sorted((root / k).iterdir()) if not p.name.endswith(".lock")]
            size = sum(size_of(p) for p in entries)
            total += size
            rows.append({"kind": k, "entries": len(entries), "bytes": size})
            if clear:
                kept += [p for p in entries if not _removed(p)]
    return {"host": socket.gethostname(), "root": str(root), "held": held, "unknown": unknown, "rows": rows,
            "bytes": total, "kept": [str(p) for p in kept], "kept_bytes": sum(size_of(p) for p in kept)}


def _removed(path: Path) -> bool:
    from workers.models.artifacts import remove

    try:
        return remove(path)
    except OSError:  # not ours to remove (permissions): kept
        return False


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed); 0 when gone."""
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
