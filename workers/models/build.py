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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.contract import ModelSpec
from workers.models.artifacts import Built, once

if TYPE_CHECKING:  # torch: imported where a model is built, never by the driver
    import torch

#: Tensors by name: a model's inputs (the one-input form: ``{"input": x}``), or its outputs.
Tensors = dict[str, "torch.Tensor"]

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
    elif spec.kind == "hf":
        from workers.models import hf

        model = hf.build(spec.ref, spec.overrides, seed)
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
        self._cache: dict[str, torch.nn.Module] = {}
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
        if spec.kind == "onnx":  # no torch form: the references of other models go all the same
            if not any(k[0] == spec.key for k in self._refs):
                self._refs.clear()
        else:
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


def onnx_artifact(
    store: ModelStore,
    spec: ModelSpec,
    batch_size: int,
    dtype: str,
    exporter: str = "dynamo",
    opset: int | None = None,
    axes: dict[str, int] | None = None,
    dynamic: bool = False,
) -> Built:
    """The ONNX file for ``spec`` at this batch size and dtype, exported once per node.

    Exports are cached on this node's disk under a content key (model spec, seed, batch,
    dtype, exporter, opset and torch version; with several inputs, their names, dtypes, shapes and the
    axes' values), so the trials of one node export a model once per shape: every export is static.
    One process exports, under the file's lock (``workers.models.artifacts.once``): a neighbouring
    actor or a build-ahead task that wants the same file waits for it, and a crash never leaves a
    torn file behind.

    ``dynamic``: one export for every shape instead, its batch axis and named axes dynamic (ORT's
    ``dynamic_shapes`` option); it is exported at batch 2 and axes of at least 2 (the exporters
    specialise dims of size 1) and cached without the shape in its key.
    """
    import torch

    if spec.kind == "onnx":
        return Built(Path(spec.ref), True, 0.0, 0.0)
    if dynamic:
        batch_size, axes = 2, {k: max(v, 2) for k, v in (axes or {}).items()}
    ident: list[Any] = [spec.key, store.seed, "dynamic" if dynamic else batch_size, dtype, exporter, opset,
                        torch.__version__, BUILD_VERSION]
    if axes and not dynamic:  # only trials with named axes: every other export keeps its cache key
        ident.append(sorted(axes.items()))
    if spec.kind == "hf":  # the architecture's code is the library's: another version, another graph
        from workers.models import hf

        ident.append(["transformers", hf.library_version()])
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / "onnx" / f"{key}.onnx"
    return once(path, lambda tmp: _export(store, spec, batch_size, dtype, exporter, opset, axes, dynamic, tmp))


def _export(store: ModelStore, spec: ModelSpec, batch_size: int, dtype: str, exporter: str, opset: int | None,
            axes: dict[str, int] | None, dynamic: bool, tmp: str) -> None:
    """Export ``spec`` to the file ``tmp``."""
    import torch

    # Export from the CPU copy: the graph doesn't depend on the device, and it keeps the
    # export off the GPU that neighbouring trials may be timing on.
    model = store.torch_model(spec, "cpu", dtype)
    if spec.inputs:
        example_in = make_inputs(spec, batch_size, dtype, "cpu", store.seed, axes or {})
        with torch.no_grad():
            out_names = list(flat_outputs(call_model(spec, model, example_in)))
        model, args = FlatCall(spec, model), tuple(example_in.values())
        names = {"input_names": list(example_in), "output_names": out_names}
    else:
        args, names = (make_input(spec, batch_size, dtype, "cpu", store.seed),), {}
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"], **names}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic and exporter == "dynamo":  # torch.export's own form; it can't convert dynamic_axes for every model
        shapes = dynamic_shapes(spec)
        kwargs["dynamic_shapes"] = (shapes,) if spec.inputs else shapes  # FlatCall.forward(*xs): one argument
    elif dynamic:
        kwargs["dynamic_axes"] = dynamic_axes(spec)
    if exporter == "dynamo":
        kwargs.update(dynamo=True, external_data=False, verbose=False)
    else:
        kwargs.update(dynamo=False)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(model, args, tmp, **kwargs)


def dynamic_axes(spec: ModelSpec) -> dict[str, dict[int, str]]:
    """torch.onnx's ``dynamic_axes`` for ``spec``: every input's batch dim and named dims, by name."""
    if not spec.inputs:
        return {"input": {0: "batch"}}
    return {i.name: {k: d for k, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs}


def dynamic_shapes(spec: ModelSpec) -> tuple[dict[int, Any], ...]:
    """torch.export's ``dynamic_shapes`` for ``spec``, positional like the export's arguments: one
    ``Dim`` per axis name, shared by every input that has that axis (so the graph knows they agree)."""
    import torch

    dims: dict[str, Any] = {}
    return tuple({k: dims.setdefault(name, torch.export.Dim(name)) for k, name in axes.items()}
                 for axes in dynamic_axes(spec).values())


def make_input(spec: ModelSpec, batch_size: int, dtype: str, device: str, seed: int) -> Any:
    """The trial's input: seeded standard-normal values, the same on every backend."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((batch_size, *spec.input_shape), generator=gen)
    return x.to(device=device, dtype=torch_dtype(dtype))


def make_inputs(spec: ModelSpec, batch_size: int, dtype: str, device: str, seed: int,
                axes: dict[str, int]) -> Tensors:
    """Every input of the trial by name, seeded, the same on every backend. A model of the one-input
    form has one, ``input`` (``make_input``'s); the others' are filled as their ``InputSpec`` says,
    in order from one generator, floating ones in the trial's dtype."""
    import torch

    if not spec.inputs:
        return {"input": make_input(spec, batch_size, dtype, device, seed)}
    gen = torch.Generator().manual_seed(seed + 1)
    out = {}
    for i in spec.inputs:
        shape = i.resolved_shape(batch_size, axes)
        if i.fill == "normal":
            t = torch.randn(shape, generator=gen)
        elif i.fill == "randint":
            t = torch.randint(int(i.low or 0), int(i.high or 2), shape, generator=gen)
        elif i.fill == "constant":
            t = torch.full(shape, float(i.value or 0))
        else:
            t = (torch.ones if i.fill == "ones" else torch.zeros)(shape)
        out[i.name] = t.to(device=device, dtype=getattr(torch, i.fed_dtype(dtype)))
    return out


def call_model(spec: ModelSpec, model: Any, inputs: Tensors) -> Any:
    """``model`` called on ``inputs``: by name (``forward(input_ids=..., ...)``), or by position for
    the one-input form and ``pass_inputs: positional``."""
    if not spec.inputs or spec.pass_inputs == "positional":
        return model(*inputs.values())
    return model(**inputs)


def flat_outputs(y: Any, prefix: str = "") -> Tensors:
    """A model's tensor outputs by name: one tensor is ``output``; a tuple or list gives ``output0``,
    ``output1``...; a dict (or a ModelOutput) its keys, nested ones joined with dots. Other values
    (None, Python numbers) are left out."""
    import torch

    if isinstance(y, torch.Tensor):
        return {prefix or "output": y}
    out: Tensors = {}
    if isinstance(y, dict) or (hasattr(y, "keys") and hasattr(y, "__getitem__")):
        for k in y.keys():
            out.update(flat_outputs(y[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(y, (tuple, list)):
        for n, v in enumerate(y):
            out.update(flat_outputs(v, f"{prefix}.{n}" if prefix else f"output{n}"))
    return out


def map_outputs(fn: Any, y: Any) -> Any:
    """``fn`` applied to every tensor of a model's output (a tensor, tuple, list or dict of them)."""
    import torch

    if isinstance(y, torch.Tensor):
        return fn(y)
    if isinstance(y, dict):
        return {k: map_outputs(fn, v) for k, v in y.items()}
    if isinstance(y, (tuple, list)):
        return type(y)(map_outputs(fn, v) for v in y) if isinstance(y, list) or type(y) is tuple else y
    return y


def host_outputs(y: Any) -> Any:
    """A model's output as float32 host arrays: one array for one tensor (the one-output case),
    else a dict of them by name (``flat_outputs``), which the parity check compares one by one."""
    flat = flat_outputs(y)
    arrays = {k: v.float().cpu().numpy() for k, v in flat.items()}
    if list(arrays) == ["output"]:
        return arrays["output"]
    return arrays


def FlatCall(spec: ModelSpec, model: Any) -> Any:  # noqa: N802 - builds an nn.Module
    """``model`` as an exporter wants it: inputs by position (in the spec's order), outputs a flat
    tuple (in ``flat_outputs``' order, so the ONNX outputs get those names)."""
    import torch

    class _FlatCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *xs: Any) -> Any:
            named = dict(zip([i.name for i in spec.inputs], xs))
            return tuple(flat_outputs(call_model(spec, self.inner, named)).values())

    return _FlatCall().eval()
