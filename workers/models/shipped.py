"""The worker's side of ``orchestrator.run.shipping``: the node's copy of the run's own files."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

from workers.models.build import cache_dir


class Shipment(TypedDict):
    """The run's own files of one model, as the driver ships them (``orchestrator.run.shipping``)."""

    digest: str  # of the content: the folder's name in the node's cache
    main: str  # the ONNX file among them (a module's: its folder)
    files: dict[str, Any]  # relative name -> the Ray ObjectRef of its bytes


#: What a worker is given: shipments by kind (``onnx``, ``python``, ``hf-causal``), then by model reference
#: (a file, a folder) or module.
Shipped = dict[str, dict[str, Shipment]]


def top_module(ref: str) -> str:
    """The top-level module of a ``python:`` reference (``mypkg`` of ``mypkg.models:make``): what ships."""
    return ref.partition(":")[0].split(".")[0]


def local_copy(entry: Shipment) -> Path:
    """The folder holding the shipped files on this node, written there first if it isn't yet.

    The files are written into a temporary folder that is renamed into place, so a neighbour
    writing the same content at the same time, or a crash, never leaves a partial copy."""
    import ray

    home = cache_dir() / "shipped"
    final = home / entry["digest"]
    if final.is_dir():
        return final
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=home, prefix=".incoming-"))
    try:
        for name, ref in entry["files"].items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ray.get(ref))
        try:
            os.replace(tmp, final)
        except OSError:  # a neighbour put the same content there first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def onnx_file(entry: Shipment) -> str:
    """This node's copy of a shipped ONNX file (and its external data, beside it)."""
    return str(local_copy(entry) / entry["main"])


def use_module(entry: Shipment) -> None:
    """Put this node's copy of a shipped module first on ``sys.path`` (once)."""
    folder = str(local_copy(entry))
    if folder not in sys.path:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
