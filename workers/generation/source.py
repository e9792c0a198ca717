"""The one model every path of a generation runs: built once per (model, device), fp32, seeded.

Torch paths cast a copy to their dtype; ONNX paths build from the folder ``save_pretrained`` wrote
(ORT GenAI's model builder reads it and writes ``model.onnx`` + ``genai_config.json``), one build per
(dtype, execution provider) that the ORT-with-IO-binding path and the ORT GenAI path share.

A random-weight model's build is an artifact of the node's cache (``<node cache>/genai/<key>``, the
key: the model's name, overrides and seed, the dtype, the execution provider and the versions of
torch, transformers and ORT GenAI), made once per node by whoever reaches it first
(``workers.models.artifacts.once``): a build-ahead task on a spare CPU (:func:`build_ahead`: the
builder needs no GPU, and the weights are drawn on the CPU on every device) or the trial's worker.
A local folder's build stays the worker's own (its files may change between runs).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.backends.base import SkipTrial
from workers.generation.models import CAUSAL, Shape, build, resolve, save_folder, shape_of

if TYPE_CHECKING:
    from workers.contract import Trial
    from workers.models.artifacts import Built

#: ONNX Runtime GenAI's model builder writes these precisions
BUILDER_PRECISION = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


class Source:
    """A causal LM by reference (a table name or a folder) with overrides and seed, on ``device``."""

    def __init__(self, ref: str, overrides: dict[str, Any] | None = None, seed: int = 0, device: str = "cpu",
                 workdir: str | Path | None = None) -> None:
        self.ref, self.overrides, self.seed, self.device = ref, dict(overrides or {}), seed, device
        self.arch, _, _ = resolve(ref)
        self.shape: Shape = shape_of(ref, self.overrides)
        self.model = build(ref, self.overrides, seed, device)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="gen-src-")
        self.workdir = Path(workdir or self._tmp.name)
        self._folder: Path | None = None
        self._onnx: dict[tuple[str, str], Path] = {}
        self._node: set[tuple[str, str]] = set()  # the builds of _onnx that are the node cache's
        #: how the last :meth:`onnx_model` got its build (None: a local folder's, or none asked)
        self.last_built: Built | None = None

    def torch_model(self, dtype: str) -> Any:
        """The model at ``dtype``: the fp32 model itself, or a cast copy (the caller drops it)."""
        import copy

        import torch

        if dtype == "fp32":
            return self.model
        return copy.deepcopy(self.model).to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype]))

    def folder(self) -> Path:
        """The fp32 model as a ``save_pretrained`` folder with a tokenizer (a local folder: itself)."""
        if self._folder is None:
            local = Path(self.ref)
            if (self.ref not in CAUSAL and (local / "config.json").is_file() and (local / "tokenizer.json").is_file()
                    and not self.overrides):
                self._folder = local
            else:
                self._folder = save_folder(self.model, self.workdir / "hf")
        return self._folder

    def onnx_model(self, dtype: str, ep: str) -> Path:
        """A folder with ORT GenAI's ``model.onnx`` and ``genai_config.json`` for ``dtype`` on ``ep``
        (``cpu`` or ``cuda``), built once by ``python -m onnxruntime_genai.models.builder``."""
        from importlib.util import find_spec

        from workers.models.artifacts import Built, once

        key = (dtype, ep)
        if key in self._onnx:
            if self.last_built is None and key in self._node:  # else a later lane keeps the first lane's figures
                self.last_built = Built(self._onnx[key], True, 0.0, 0.0)
            return self._onnx[key]
        if not self.arch_builds():
            raise SkipTrial(f"ONNX Runtime GenAI's model builder does not build {self.shape.arch} "
                            "(it builds Llama, Mistral, Qwen2, Phi, Gemma)")
        if find_spec("onnxruntime_genai") is None:
            raise SkipTrial("onnxruntime-genai-cuda is not installed (the optional extra 'genai')")
        cached = genai_path(self.ref, self.overrides, self.seed, dtype, ep)
        if cached is None:  # a local folder, or weights drawn on the device: this worker's own build
            out = self.workdir / f"onnx-{dtype}-{ep}"
            self._run_builder(dtype, ep, out)
            self.last_built = None
        else:
            self.last_built = once(cached, lambda tmp: self._run_builder(dtype, ep, Path(tmp)), folder=True)
            out = cached
            self._node.add(key)
        self._onnx[key] = out
        return out

    def build_columns(self) -> dict[str, float]:
        """The row's ``artifact_wait_s`` and ``artifact_build_s`` for the last :meth:`onnx_model`'s
        node-cache build (none for a local folder's or where none was asked since ``last_built`` was reset)."""
        b = self.last_built
        return {} if b is None else {"artifact_wait_s": b.wait_s, "artifact_build_s": b.build_s}

    def _run_builder(self, dtype: str, ep: str, out: Path) -> None:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(self.folder()), "-o", str(out),
               "-p", BUILDER_PRECISION[dtype], "-e", ep, "-c", str(self.workdir / "builder-cache")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not (out / "model.onnx").is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SkipTrial(f"ONNX Runtime GenAI's model builder failed for {self.shape.arch} {dtype} {ep}: {tail[0]}")

    def arch_builds(self) -> bool:
        return CAUSAL[self.shape.arch].genai_builder

    def close(self) -> None:
        self.model = None
        if self._tmp is not None:
            self._tmp.cleanup()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "onnxruntime-genai-cuda", "onnxruntime-genai"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


#: How a build is made (the weights' drawing, the folder, the builder's arguments): part of the key, so
#: a change to any of them never takes a build made the old way. Raise it with such a change.
GENAI_RECIPE = 1


def genai_path(ref: str, overrides: dict[str, Any], seed: int, dtype: str, ep: str) -> Path | None:
    """Where this node keeps ORT GenAI's build of a random-weight model (None: ``ref`` is a folder, or
    the model's weights are drawn on its device, not the CPU: ``models.CPU_DRAW_MAX_BYTES``)."""
    from workers.generation.models import drawn_on_cpu
    from workers.models.build import cache_dir

    if ref not in CAUSAL or not drawn_on_cpu(ref, overrides):
        return None
    what = {"ref": ref, "overrides": overrides, "seed": seed, "dtype": dtype, "ep": ep, "versions": _versions(),
            "recipe": GENAI_RECIPE, "precision": BUILDER_PRECISION[dtype]}
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "genai" / key


def ahead_key(trial: Trial, dtypes: dict[str, frozenset[str]]) -> Hashable | None:
    """The build a generation trial of an ONNX path needs, as a build-ahead key (None: none can be
    made ahead: a local folder, an architecture the builder doesn't build, a device left to the worker
    to choose (``auto``), a dtype the path doesn't run there)."""
    m = trial.model
    ep = trial.device if trial.device in ("cuda", "cpu") else None
    if ep is None or m.ref not in CAUSAL or not CAUSAL[m.ref].genai_builder or trial.dtype not in dtypes.get(ep, ()):
        return None
    return ("genai", m.ref, json.dumps(m.overrides, sort_keys=True), trial.seed, trial.dtype, ep)


def build_ahead(trial: Trial) -> None:
    """Build, on this CPU, the node-cache build :func:`ahead_key` names: the model drawn as the
    worker draws it (on the CPU), its folder, and ORT GenAI's builder run on it. Nothing where the
    build is there already, ORT GenAI is not installed, or the worker draws the weights on its device.
    The weights are dropped once the folder is written: the builder's process reads the folder."""
    from importlib.util import find_spec

    m = trial.model
    path = genai_path(m.ref, m.overrides, trial.seed, trial.dtype, trial.device)
    if path is None or path.exists() or find_spec("onnxruntime_genai") is None:
        return
    src = Source(m.ref, m.overrides, trial.seed, "cpu")
    try:
        src.folder()
        src.model = None
        src.onnx_model(trial.dtype, trial.device)
    finally:
        src.close()
