"""The one model every path of a generation runs: built once per (model, device), fp32, seeded.

Torch paths cast a copy to their dtype; ONNX paths build from the folder ``save_pretrained`` wrote
(ORT GenAI's model builder reads it and writes ``model.onnx`` + ``genai_config.json``), cached per
(dtype, execution provider) so the ORT-with-IO-binding path and the ORT GenAI path share one build.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from workers.backends.base import SkipTrial
from workers.generation.models import Shape, build, resolve, save_folder, shape_of

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
            if (local / "config.json").is_file() and (local / "tokenizer.json").is_file() and not self.overrides:
                self._folder = local
            else:
                self._folder = save_folder(self.model, self.workdir / "hf")
        return self._folder

    def onnx_model(self, dtype: str, ep: str) -> Path:
        """A folder with ORT GenAI's ``model.onnx`` and ``genai_config.json`` for ``dtype`` on ``ep``
        (``cpu`` or ``cuda``), built once by ``python -m onnxruntime_genai.models.builder``."""
        from importlib.util import find_spec

        key = (dtype, ep)
        if key in self._onnx:
            return self._onnx[key]
        if not self.arch_builds():
            raise SkipTrial(f"ONNX Runtime GenAI's model builder does not build {self.shape.arch} "
                            "(it builds Llama, Mistral, Qwen2, Phi, Gemma)")
        if find_spec("onnxruntime_genai") is None:
            raise SkipTrial("onnxruntime-genai-cuda is not installed (the optional extra 'genai')")
        out = self.workdir / f"onnx-{dtype}-{ep}"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(self.folder()), "-o", str(out),
               "-p", BUILDER_PRECISION[dtype], "-e", ep, "-c", str(self.workdir / "builder-cache")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not (out / "model.onnx").is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SkipTrial(f"ONNX Runtime GenAI's model builder failed for {self.shape.arch} {dtype} {ep}: {tail[0]}")
        self._onnx[key] = out
        return out

    def arch_builds(self) -> bool:
        from workers.generation.models import CAUSAL

        return CAUSAL[self.shape.arch].genai_builder

    def close(self) -> None:
        self.model = None
        if self._tmp is not None:
            self._tmp.cleanup()
