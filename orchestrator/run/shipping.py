"""Model files travel with the run: no shared filesystem is needed.

A worker on another machine can't open the driver's ``/home/me/models/net.onnx`` or import the
driver's ``mypkg/models.py``. So before the workers start, the run's own files go into Ray's
object store, once:

- every ``onnx:`` file, with the external-data files it names (all inside its folder: validation
  checks that);
- every ``hf-causal:`` model given as a ``save_pretrained`` folder, the folder's files whole (its
  config, weights and tokenizer; caches and version-control folders left out);
- the top-level module or package of every ``python:`` factory that is not installed (found on
  the driver's working directory or PYTHONPATH, not in site-packages), its files except caches.

Each worker gets the object references; on the first trial that needs them on its node it writes
the files into the node's cache (``<cache>/shipped/<content digest>/``): an ONNX trial runs from
that copy (a model folder's trial loads the folder's copy), and the copy of a module comes first on
the worker's ``sys.path``. Later runs of the
same content find it there. The row's ``model_source`` still names the driver's path.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workers.contract import Trial
from workers.models.shipped import top_module

#: Not shipped with a package: caches and version-control folders.
SKIP_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
#: infer-orch's own packages: every worker has them already.
OWN = frozenset({"orchestrator", "workers"})
#: A module folder larger than this is not shipped (install it on the nodes instead).
MAX_MODULE_BYTES = 256 * 2**20


def _onnx_files(path: Path) -> list[str]:
    """The model file's name and the external-data files it names (relative to its folder)."""
    import onnx

    from orchestrator.plan.onnxfile import _external_locations

    model = onnx.load(str(path), load_external_data=False)
    extra = sorted({loc for _, loc in _external_locations(model) if loc})
    return [path.name, *extra]


def _folder_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative to it), caches and version-control folders left out."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        names += [str((Path(root) / f).relative_to(folder)) for f in sorted(files)]
    return names


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
        names = [str(Path(pkg.name) / n) for n in _folder_files(pkg)]
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


def missing_module(ref: str, paths: list[str]) -> str | None:
    """The module of the ``python:`` reference ``ref`` (``pkg.mod:factory``) that is neither on
    ``paths`` nor installed here, or None when every part of it is found. Imports nothing: each
    part is looked for in the folders of the one before (a package's ``__init__`` doesn't run)."""
    parts = ref.partition(":")[0].split(".")
    try:
        spec = importlib.machinery.PathFinder.find_spec(parts[0], paths)
        # else installed, built in, or on this interpreter's own path
        spec = spec or importlib.util.find_spec(parts[0])
        if spec is None:
            return parts[0]
        for k in range(1, len(parts)):
            inside = list(spec.submodule_search_locations or [])
            if not inside:  # a module, not a package: an installed one may make its own (os.path)
                return None if _installed(spec) else ".".join(parts[:k + 1])
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:k + 1]), inside)
            if spec is None:
                return ".".join(parts[:k + 1])
    except (ImportError, ValueError):  # a name no finder takes: the trial's import says what is wrong
        return None
    return None


def _installed(spec: Any) -> bool:
    """Whether a module spec is Python's own or an installed package's (not the user's files)."""
    if spec.origin in (None, "built-in", "frozen"):
        return True
    where = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    origin = Path(spec.origin).resolve()
    return any(origin.is_relative_to(p) for p in where) or "site-packages" in origin.parts


def check_factories(models: Sequence[Any], source: str, address: str | None,
                    warn: Callable[[str], None] | None = None) -> None:
    """Every ``python:`` model's module is one the workers can import. For an embedded Ray, whose
    workers import from the driver's working directory and PYTHONPATH (and its installed packages),
    a module found in none of them is a PlanError; on a cluster (``address``) a module may be
    installed on the nodes only, so ``warn`` gets one line and the run goes on."""
    from orchestrator.errors import PlanError
    from orchestrator.run.cluster import worker_pythonpath

    paths = worker_pythonpath()
    for i, model in enumerate(models):
        if model.kind != "python":
            continue
        missing = missing_module(model.ref, [*paths, *sys.path])
        if missing is None:
            continue
        message = (f"{source}: models[{i}]: python: module '{missing}' is not found on the workers' path "
                   f"(the working directory and PYTHONPATH: {os.pathsep.join(paths)}) nor installed")
        if address is None:
            raise PlanError(f"{message}; run from the folder that holds it, or add that folder to PYTHONPATH")
        if warn is not None:
            warn(f"{message}: going on, in case the cluster's nodes have it")


def ship(trials: list[Trial], pythonpath: list[str]) -> dict[str, dict[str, Any]]:
    """``{"onnx": {driver path: entry}, "python": {top-level module: entry}, "hf-causal": {driver
    folder: entry}}``, an entry being ``{"digest", "main", "files": {relative name: ObjectRef}}``;
    the caller keeps it (the references) until the run ends. ``pythonpath``: where the workers would
    import from."""
    out: dict[str, dict[str, Any]] = {"onnx": {}, "python": {}, "hf-causal": {}}
    for ref in sorted({t.model.ref for t in trials if t.model.kind == "onnx"}):
        path = Path(ref)
        out["onnx"][ref] = _put(path.parent, _onnx_files(path), path.name)
    for ref in sorted({t.model.ref for t in trials if t.model.kind == "hf-causal" and Path(t.model.ref).is_dir()}):
        out["hf-causal"][ref] = _put(Path(ref), _folder_files(Path(ref)), "")
    for top in sorted({top_module(t.model.ref) for t in trials if t.model.kind == "python"}):
        found = _module_files(top, pythonpath)
        if found:
            out["python"][top] = _put(*found, main="")
    return out
