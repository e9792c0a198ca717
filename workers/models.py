"""Building models from a trial's model spec, and the per-node ONNX export cache.

A model spec is a ``workers.contract.ModelSpec``: ``kind`` is ``torchvision``, ``python`` or
``onnx``; ``ref`` the torchvision name, the ``package.module:factory`` or the ONNX file's path;
``input_shape`` the per-sample shape.

Torch models are built on the CPU in fp32 with a fixed seed (no hub downloads: torchvision
models get ``weights=None``), cached by the actor, and copied to the trial's device and dtype.

Random weights alone make some networks' activations grow layer after layer until fp16
overflows (MobileNetV3-Large gives NaN in fp16 on an H100). So after building a torchvision
model, its BatchNorm running statistics are re-estimated on one seeded random batch (the same
distribution as the trial inputs: standard normal): every BatchNorm then normalises its input
to about unit scale, as trained weights do, and every shipped model stays finite in fp16 and
bf16 (tests/test_parity.py checks it).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from workers.contract import ModelSpec

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: Bumped whenever the weights a spec builds to change (part of the export cache key).
BUILD_VERSION = 2
#: Samples in the batch that re-estimates BatchNorm statistics.
CALIBRATION_BATCH = 8


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name])


def build_torch_model(spec: ModelSpec, seed: int) -> Any:
    """Build the fp32 CPU ``nn.Module`` for ``spec``, in eval mode, with seeded weights."""
    import torch

    torch.manual_seed(seed)
    if spec.kind == "torchvision":
        import torchvision

        model = torchvision.models.get_model(spec.ref, weights=None)
        calibrate_batchnorm(model, spec, seed)
    elif spec.kind == "python":
        module_name, _, attr = spec.ref.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        model = factory()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"python:{spec.ref} returned {type(model).__name__}, not an nn.Module")
    else:
        raise ValueError(f"a model of kind {spec.kind!r} has no torch form")
    return model.eval()


def calibrate_batchnorm(model: Any, spec: ModelSpec, seed: int) -> None:
    """Re-estimate every BatchNorm's running mean/var on one seeded standard-normal batch."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.randn((CALIBRATION_BATCH, *spec.input_shape), generator=gen)
    model.train()
    with torch.no_grad():
        model(x)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


class ModelStore:
    """The actor's cache of built fp32 CPU modules, one per model spec.

    ``torch_model`` returns a fresh copy on the requested device and dtype, so a runner may
    change it (channels_last, compile) without affecting the next trial.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._cache: dict[str, Any] = {}
        self._refs: dict[Any, Any] = {}

    def holds(self, spec: ModelSpec) -> bool:
        return spec.key in self._cache

    def base_model(self, spec: ModelSpec) -> Any:
        key = spec.key
        if key not in self._cache:
            # One model at a time: an actor that moves to another model drops the old one.
            self._cache.clear()
            self._refs.clear()
            self._cache[key] = build_torch_model(spec, self.seed)
        return self._cache[key]

    def torch_model(self, spec: ModelSpec, device: str, dtype: str) -> Any:
        model = copy.deepcopy(self.base_model(spec))
        return model.to(device=device, dtype=torch_dtype(dtype))

    def reference(self, spec: ModelSpec, key: Any, compute: Any) -> Any:
        """The parity reference output for ``spec`` under ``key``; ``compute()`` makes it once."""
        self.base_model(spec)  # a change of model drops the old model's references too
        full = (spec.key, key)
        if full not in self._refs:
            self._refs[full] = compute()
        return self._refs[full]


def cache_dir() -> Path:
    """This node's cache directory (ONNX exports). ``INFER_ORCH_CACHE`` overrides it."""
    root = os.environ.get("INFER_ORCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "infer-orch"
    )
    return Path(root)


def onnx_export(
    store: ModelStore,
    spec: ModelSpec,
    batch_size: int,
    dtype: str,
    exporter: str = "dynamo",
    opset: int | None = None,
) -> tuple[Path, bool]:
    """The ONNX file for ``spec`` at this batch size and dtype; returns (path, was_cached).

    Exports are cached on this node's disk under a content key (model spec, seed, batch,
    dtype, exporter, opset and torch version), so the trials of one node export a model once.
    The file is written under a temporary name and renamed, so a concurrent export by a
    neighbouring actor or a crash never leaves a torn file behind.
    """
    import torch

    if spec.kind == "onnx":
        return Path(spec.ref), True
    key = hashlib.sha256(
        json.dumps(
            [spec.key, store.seed, batch_size, dtype, exporter, opset, torch.__version__, BUILD_VERSION],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    out_dir = cache_dir() / "onnx"
    path = out_dir / f"{key}.onnx"
    if path.exists():
        return path, True
    out_dir.mkdir(parents=True, exist_ok=True)
    # Export from the CPU copy: the graph doesn't depend on the device, and it keeps the
    # export off the GPU that neighbouring trials may be timing on.
    model = store.torch_model(spec, "cpu", dtype)
    example = make_input(spec, batch_size, dtype, "cpu", store.seed)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".onnx.tmp")
    os.close(fd)
    try:
        kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"]}
        if opset is not None:
            kwargs["opset_version"] = opset
        if exporter == "dynamo":
            kwargs.update(dynamo=True, external_data=False, verbose=False)
        else:
            kwargs.update(dynamo=False)
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(model, (example,), tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, False


def make_input(spec: ModelSpec, batch_size: int, dtype: str, device: str, seed: int) -> Any:
    """The trial's input: seeded standard-normal values, the same on every backend."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((batch_size, *spec.input_shape), generator=gen)
    return x.to(device=device, dtype=torch_dtype(dtype))
