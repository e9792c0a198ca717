"""Model files travel with the run: no shared filesystem is needed.

A worker on another machine can't open the driver's ``/home/me/models/net.onnx`` or import the
driver's ``mypkg/models.py``. So before the workers start, the run's own files go into Ray's
object store, once:

- every ``onnx:`` file, with the external-data files it names (all inside its folder: validation
  checks that);
- the top-level module or package of every ``python:`` factory that is not installed (found on
  the driver's working directory or PYTHONPATH, not in site-packages), its files except caches.

Each worker gets the object references; on the first trial that needs them on its node it writes
the files into the node's cache (``<cache>/shipped/<content digest>/``): an ONNX trial runs from
that copy, and the copy of a module comes first on the worker's ``sys.path``. Later runs of the
same content find it there. The row's ``model_source`` still names the driver's path.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sysconfig
from pathlib import Path
from typing import Any

from workers.contract import Trial
from workers.shipped import top_module

#: Not shipped with a package: caches and version-control folders.
SKIP_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
#: infer-orch's own packages: every worker has them already.
OWN = frozenset({"orchestrator", "workers"})
#: A module folder larger than this is not shipped (install it on the nodes instead).
MAX_MODULE_BYTES = 256 * 2**20


def _onnx_files(path: Path) -> list[str]:
    """The model file's name and the external-data files it names (relative to its folder)."""
    import onnx

    from orchestrator.onnxfile import _external_locations

    model = onnx.load(str(path), load_external_data=False)
    extra = sorted({loc for _, loc in _external_locations(model) if loc})
    return [path.name, *extra]


def _module_files(top: str, paths: list[str]) -> tuple[Path, list[str]] | None:
    """(folder, file names relative to it) of the top-level module ``top`` as the workers' path
    finds it, or None when it is installed (site-packages) or not found (its trial says so)."""
    if top in OWN:
        return None
    spec = importlib.machinery.PathFinder.find_spec(top, paths)
    if spec is None or spec.origin is None:
        return None
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    origin = Path(spec.origin).resolve()
    if any(origin.is_relative_to(p) for p in installed) or "site-packages" in origin.parts:
        return None
    if spec.submodule_search_locations:  # a package: its folder, whole
        pkg = origin.parent
        names = []
        for root, dirs, files in os.walk(pkg):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            names += [str((Path(root) / f).relative_to(pkg.parent)) for f in sorted(files)]
        size = sum((pkg.parent / n).stat().st_size for n in names)
        if size > MAX_MODULE_BYTES:
            from orchestrator.errors import InputError

            raise InputError(f"python: package {top} ({pkg}) is {size / 2**20:.0f} MiB, too large to send with the "
                             f"run (at most {MAX_MODULE_BYTES / 2**20:.0f} MiB): install it on every node")
        return pkg.parent, names
    return origin.parent, [origin.name]


def _put(folder: Path, names: list[str], main: str) -> dict[str, Any]:
    import ray

    digest = hashlib.sha256()
    files = {}
    for name in names:
        data = (folder / name).read_bytes()
        digest.update(name.encode() + b"\0" + data)
        files[name] = ray.put(data)
    return {"digest": digest.hexdigest()[:32], "main": main, "files": files}


def ship(trials: list[Trial], pythonpath: list[str]) -> dict[str, dict[str, Any]]:
    """``{"onnx": {driver path: entry}, "python": {top-level module: entry}}``, an entry being
    ``{"digest", "main", "files": {relative name: ObjectRef}}``; the caller keeps it (the
    references) until the run ends. ``pythonpath``: where the workers would import from."""
    out: dict[str, dict[str, Any]] = {"onnx": {}, "python": {}}
    for ref in sorted({t.model.ref for t in trials if t.model.kind == "onnx"}):
        path = Path(ref)
        out["onnx"][ref] = _put(path.parent, _onnx_files(path), path.name)
    for top in sorted({top_module(t.model.ref) for t in trials if t.model.kind == "python"}):
        found = _module_files(top, pythonpath)
        if found:
            out["python"][top] = _put(*found, main="")
    return out
