"""Artifacts of the per-node cache built once per node, by whoever reaches them first.

An artifact is a file or a folder under the node's cache (``workers.models.build.cache_dir``) whose
name is a content key: an ONNX export, ORT GenAI's model builder's folder, the ``sleep`` backend's
stand-in. It is made by a build-ahead task on
a spare CPU (``workers/ahead.py``) or by the worker whose trial needs it, whichever takes its lock
first. :func:`once` makes that one build: it holds an ``flock`` on ``<artifact>.lock`` while
building (the kernel drops it when the process dies, so a crashed builder never blocks anyone), and
writes under a temporary name that it renames, so nobody reads a torn file (a build killed midway
leaves its temporary behind: the next build of that artifact removes it, holding the lock). A worker that finds
the lock held waits for the build and takes the file: never a second build; :class:`Built` says
how long it waited (the row's ``artifact_wait_s``) and how long it built (``artifact_build_s``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: A build-ahead task builds nothing on a cache disk with less free space than this; the workers
#: then build their own artifacts (as without builders) and fail with the disk's own error.
MIN_FREE_BYTES = 2 << 30


@dataclass(frozen=True, slots=True)
class Built:
    path: Path
    cached: bool  # this call did not build it: it was there, or another process built it meanwhile
    wait_s: float  # seconds waiting for another process's build of it
    build_s: float  # seconds building it here


def once(path: Path, build: Callable[[str], None], folder: bool = False) -> Built:
    """The artifact at ``path``: there already, built by another process (waited for), or built here
    by ``build(tmp)``, which writes the file ``tmp`` (with ``folder``: fills the empty folder ``tmp``),
    renamed to ``path`` when it returns."""
    if path.exists():
        return Built(path, True, 0.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(f"{path}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is building it: wait for its build
            fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.perf_counter() - t0
        if path.exists():
            return Built(path, True, waited, 0.0)
        for left in path.parent.glob(f"{path.name}.*.tmp"):  # a build killed midway (we hold its lock now)
            _remove(left)
        t1 = time.perf_counter()
        if folder:
            tmp = tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
            os.close(fd)
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            _remove(Path(tmp))  # gone already when renamed
        return Built(path, False, waited, time.perf_counter() - t1)


def room_for(directory: Path, need: int = MIN_FREE_BYTES) -> bool:
    """Whether the disk of ``directory`` (or of its nearest existing parent) has ``need`` bytes free."""
    d = directory
    while not d.exists() and d != d.parent:
        d = d.parent
    return shutil.disk_usage(d).free >= need


def remove(path: Path) -> bool:
    """Remove the cache entry at ``path`` (a file or a folder), unless it is an artifact whose build
    holds its lock now (then False). A build's temporary goes with its artifact; lock files stay
    (a process may be waiting on one)."""
    name = path.name
    if name.endswith(".tmp"):  # a build's temporary: <artifact>.<random>.tmp
        lock_path = path.parent / f"{name[:-4].rsplit('.', 1)[0]}.lock"
    else:
        lock_path = path.parent / f"{name}.lock"
    if not lock_path.exists():
        _remove(path)
        return True
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _remove(path)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
