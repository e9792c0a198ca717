"""ONNX Runtime GenAI: its model builder's ``model.onnx`` driven by its own ``Generator`` loop, the way
ORT's team runs LLMs. Generation trials only (``hf-causal`` models; ``workers.generation.ort_paths``
does the work); ``cuda_graph: true`` turns on its CUDA graph (decode steps replayed).

Needs ``onnxruntime-genai-cuda`` (the optional extra ``genai``; its CUDA wheel runs on the CPU too).
The plain ``onnxruntime-genai`` wheel pulls the CPU ``onnxruntime`` over ``onnxruntime-gpu``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from workers.backends.base import BackendOptions, Runner

if TYPE_CHECKING:  # numpy: not imported by the driver, which only validates options
    import numpy as np

    from workers.contract import Trial
    from workers.models.build import ModelStore


class OrtGenAIOptions(BackendOptions):
    cuda_graph: bool = False
    """ORT GenAI's CUDA graph (``enable_cuda_graph``): CUDA devices only; at batch > 1 where its release allows."""


class OrtGenAIRunner(Runner):
    name = "ort-genai"
    generation = "ort-genai"
    Options = OrtGenAIOptions
    dtypes: ClassVar[dict[str, frozenset[str]]] = {"cuda": frozenset({"fp32", "fp16", "bf16"}),
                                                   "cpu": frozenset({"fp32"})}
    model_kinds = frozenset({"hf-causal"})
    requires = ("onnxruntime_genai",)

    @classmethod
    def generation_path(cls, options: dict[str, Any]) -> str | None:
        return "ort-genai-graph" if options.get("cuda_graph") else "ort-genai"

    @classmethod
    def unavailable(cls) -> str | None:
        reason = super().unavailable()
        return f"{reason} (pip install onnxruntime-genai-cuda: the optional extra 'genai')" if reason else None

    @classmethod
    def ahead(cls, trial: Trial) -> Hashable | None:
        """ORT GenAI's model builder's decoder (``workers.generation.source.ahead_key``), which the
        ``ort`` generation path shares."""
        from workers.generation.source import ahead_key

        return ahead_key(trial, cls.dtypes)

    @classmethod
    def build_ahead(cls, trial: Trial, store: ModelStore) -> None:
        from workers.generation.source import build_ahead

        build_ahead(trial)

    def setup(self) -> None:  # a single-pass trial never reaches here: its model kind is refused first
        raise NotImplementedError("ort-genai runs generation trials only (hf-causal models)")

    def step(self) -> None:
        raise NotImplementedError("ort-genai runs generation trials only")

    def output(self) -> np.ndarray:
        raise NotImplementedError("ort-genai runs generation trials only")
