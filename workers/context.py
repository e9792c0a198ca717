"""What a runner is given: the trial's spec, the device, and the actor's model store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from workers.contract import ModelSpec, Trial
from workers.models.artifacts import Built
from workers.models.build import ModelStore, Tensors, make_input, make_inputs, onnx_artifact
from workers.row import Row


@dataclass
class TrialContext:
    trial: Trial
    device: str  # "cuda" or "cpu"
    store: ModelStore
    cpus: float = 1.0
    #: facts a runner learns during setup that belong in the row (export cache hit, ...).
    facts: Row = field(default_factory=dict)

    @property
    def model(self) -> ModelSpec:
        return self.trial.model

    @property
    def batch_size(self) -> int:
        return self.trial.batch_size

    @property
    def dtype(self) -> str:
        return self.trial.dtype

    @property
    def io(self) -> str:
        return self.trial.io

    @property
    def seed(self) -> int:
        return self.trial.seed

    def torch_model(self) -> Any:
        """A fresh copy of the trial's model on the trial's device and dtype, in eval mode."""
        return self.store.torch_model(self.model, self.device, self.dtype)

    def input(self, device: str | None = None) -> Any:
        """The trial's input tensor: on ``device`` (default: the trial's device)."""
        return make_input(self.model, self.batch_size, self.dtype, device or self.device, self.seed)

    def inputs(self, device: str | None = None, seed: int | None = None) -> Tensors:
        """Every input of the trial by name (``input`` alone for a one-input model), on ``device``;
        drawn with ``seed`` instead of the trial's own where given (the stale-output check's second input)."""
        return make_inputs(self.model, self.batch_size, self.dtype, device or self.device,
                           self.seed if seed is None else seed, self.trial.axes)

    def call(self, model: Any, inputs: Tensors) -> Any:
        """``model`` called on ``inputs`` the way the plan says (by name, or by position)."""
        from workers.models.build import call_model

        return call_model(self.model, model, inputs)

    def onnx_path(self, exporter: str = "dynamo", opset: int | None = None, dynamic: bool = False) -> str:
        t0 = time.perf_counter()
        built = onnx_artifact(self.store, self.model, self.batch_size, self.dtype, exporter, opset,
                              self.trial.axes, dynamic)
        route = ("the plan's ONNX file" if self.model.kind == "onnx"
                 else f"torch.onnx {exporter} export of the {self.dtype} model, "
                      f"{'dynamic shapes (one export for every shape)' if dynamic else 'static shapes'}")
        self.facts.update(export_cached=built.cached, export_s=time.perf_counter() - t0, export_route=route)
        if self.model.kind != "onnx":
            self.artifact(built)
        return str(built.path)

    def artifact(self, built: Built) -> None:
        """Record, for the row, how this trial got an artifact of the node's cache: the seconds it
        waited for a build-ahead task's (or a neighbour's) build, and the seconds it built one itself."""
        self.facts["artifact_wait_s"] = self.facts.get("artifact_wait_s", 0.0) + built.wait_s
        self.facts["artifact_build_s"] = self.facts.get("artifact_build_s", 0.0) + built.build_s
