"""A node's cache as ``infer-orch cache`` sees it: what each kind holds, and clearing it.

The cache (``workers.models.build.cache_dir``) is a folder per kind, :data:`KINDS`: ONNX exports,
ORT GenAI's decoder builds, Inductor's and TensorRT's caches, the files runs shipped to the node,
the ``sleep`` backend's stand-ins. Other folders under the same root are not infer-orch's: listed
as such, never cleared. :func:`report` runs where the cache is: in the command's process for this
machine, in a task on each node for a cluster.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

#: The cache's kinds: the folders infer-orch writes under the node cache.
KINDS = ("onnx", "genai", "inductor", "tensorrt", "shipped", "sleep")


def report(kinds: list[str] | None = None, clear: bool = False) -> dict[str, Any]:
    """This node's cache: its root, the kinds it holds, the other folders there, per kind asked (every
    kind held by default; one not held: 0 entries) the entries and bytes, and with ``clear`` the bytes
    freed and what was kept (an artifact whose build holds its lock, a shipped copy being written, an
    entry not ours to remove). ``error``: why the cache could not be read."""
    from workers.models.build import cache_dir

    root = cache_dir()
    out: dict[str, Any] = {"host": socket.gethostname(), "root": str(root), "held": [], "others": [], "rows": [],
                           "bytes": 0, "freed": 0, "kept": [], "error": None}
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []
        out["held"] = [n for n in names if n in KINDS]
        out["others"] = [n for n in names if n not in KINDS]
        for k in dict.fromkeys(kinds or out["held"]):
            folder = root / k
            entries = sorted(p for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []
            size = sum(size_of(p) for p in entries)
            out["rows"].append({"kind": k, "entries": len(entries), "bytes": size})
            out["bytes"] += size
            if clear:
                for p in entries:
                    before = size_of(p)
                    if _removed(p) and not os.path.lexists(p):
                        out["freed"] += before
                    else:
                        out["kept"].append(str(p))
                        out["freed"] += before - size_of(p)
    except OSError as exc:
        out["error"] = f"{exc.strerror or exc}: {exc.filename or root}"
    return out


def _removed(path: Path) -> bool:
    from workers.models.artifacts import remove

    if path.name.startswith(".incoming-"):  # a shipped copy being written by a worker now
        return False
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
