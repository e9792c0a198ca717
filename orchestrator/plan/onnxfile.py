"""A plan's ONNX files: their inputs read from the header (``onnx_file_inputs``, once per file
version), and checks that would otherwise fail every trial on the workers, or read
files they should not.

- External data (tensors stored in files beside the model) must stay inside the model file's
  folder: a location that leaves it (``../w.bin``, an absolute path, a symlink pointing out) is
  refused. onnx < 1.21 followed such paths; the check here does not depend on the workers' onnx.
- The file's IR version must be one the ONNX Runtime that will run it can read. The driver asks
  the onnxruntime installed with it (ORT exposes no constant for its maximum IR version): an
  in-memory one-node model with an IR version no runtime supports is loaded once, and ORT's
  "Unsupported model IR version: N, max supported IR version: M" gives M (about 0.1 s, paid only
  by plans that run an ``onnx:`` model on ``ort``). Where onnxruntime isn't installed with the
  driver (workers may have it), nothing is said rather than guessed.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from orchestrator.errors import PlanError
from orchestrator.plan.messages import model_error

#: resolved model path -> the IR version read when the plan was validated.
_IR_VERSIONS: dict[str, int] = {}


def check_loaded(model: Any, path: Path) -> None:
    """Checks on a model loaded without its external data; records its IR version."""
    real = path.resolve()
    _IR_VERSIONS[str(real)] = int(model.ir_version)
    base = real.parent
    for name, location in _external_locations(model):
        target = (base / location).resolve()
        if os.path.isabs(location):
            why = "an absolute path"
        elif not target.is_relative_to(base):
            why = "a link out of it" if (base / location).parent.resolve() == base else "a path out of it"
        else:
            continue
        raise PydanticCustomError(
            "model_file",
            "{path}: tensor '{name}' keeps its data at '{location}' ({why}: {target}); external data must "
            "stay in the model file's folder {base}",
            {"path": str(path), "name": name, "location": location, "why": why, "target": str(target),
             "base": str(base)},
        )


def _external_locations(model: Any) -> Iterator[tuple[str, str]]:
    """(tensor name, location) of every tensor of the model whose data lives in another file."""
    from onnx import TensorProto

    for t in _tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            yield t.name, loc
    for f in model.functions:
        for node in f.node:
            for t in _node_tensors(node):
                if t.data_location == TensorProto.EXTERNAL:
                    yield t.name, next((e.value for e in t.external_data if e.key == "location"), "")


def _tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for g in attr.graphs:
            yield from _tensors(g)


def check_runtime(trials: list[Any], models: list[Any], source: str) -> None:
    """PlanError when an ``onnx:`` file that runs on ONNX Runtime has an IR version newer than the
    installed onnxruntime reads; silent where onnxruntime isn't installed with the driver."""
    from workers.backends import get

    refs = {t.model.ref for t in trials if t.model.kind == "onnx" and _runs_on_ort(get(t.backend))}
    if not refs:
        return
    found = ort_max_ir_version()
    if found is None:
        return
    version, most = found
    for i, model in enumerate(models):
        if model.ref not in refs:
            continue
        ir = ir_version(model.ref)
        if ir is not None and ir > most:
            raise PlanError(
                f"{source}: models[{i}]: {model.ref} has ONNX IR version {ir}; the ONNX Runtime installed here "
                f"(onnxruntime {version}) reads up to IR version {most}, so every ort trial would fail. Save the "
                f"model with an older onnx (or set ir_version {most} if it uses nothing newer), or upgrade onnxruntime"
            )


def _runs_on_ort(runner: Any) -> bool:
    """Whether the backend runs ``onnx:`` files with ONNX Runtime (it says so on its class)."""
    return "onnx" in runner.model_kinds and "onnxruntime" in runner.requires


def ir_version(ref: str) -> int | None:
    """The IR version of the ONNX file ``ref`` (recorded when the plan was read, else read now)."""
    if ref not in _IR_VERSIONS:
        try:
            import onnx

            _IR_VERSIONS[ref] = int(onnx.load(ref, load_external_data=False).ir_version)
        except Exception:  # unreadable now: the plan check said so when it could
            return None
    return _IR_VERSIONS[ref]


@functools.cache
def ort_max_ir_version() -> tuple[str, int] | None:
    """(onnxruntime version, the highest ONNX IR version it loads), or None when onnxruntime isn't
    installed here or doesn't say."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except Exception:  # not installed with the driver (workers may have it), or broken
        return None
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 1 << 30
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        found = re.search(r"max supported IR version: (\d+)", str(exc))
        if found:
            return ort.__version__, int(found.group(1))
    return None


#: ONNX element types infer-orch can feed, as the plan's dtype names.
ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool"}


def onnx_input_shape(path: Path) -> tuple[int, ...] | None:
    """The per-sample input shape stored in an ONNX file, or None when it is symbolic."""
    if not path.is_file():
        raise PydanticCustomError("model_file", "ONNX file not found: {path}", {"path": str(path)})
    inputs = onnx_file_inputs(path)
    if len(inputs) != 1:
        raise PydanticCustomError(
            "model_file", "{path} has {n} inputs; infer-orch feeds models with one",
            {"path": str(path), "n": len(inputs)},
        )
    dims = inputs[0][2][1:]
    if any(not isinstance(d, int) for d in dims):
        return None
    return tuple(dims)


def onnx_file_inputs(path: Path) -> tuple[tuple[str, int, tuple[int | str | None, ...]], ...]:
    """(name, ONNX element type, dims) of each input the file takes (initializers left out), after
    the file checks; a dim is an int, its symbolic name, or None. Read once per file and version of
    it: deciding a model's form and then reading its shape would otherwise parse the file twice."""
    stat = path.stat()
    return _read_onnx_inputs(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _read_onnx_inputs(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, int, tuple[int | str | None, ...]], ...]:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise PydanticCustomError(
            "model_file", "{path} is not a readable ONNX model ({exc})", {"path": path, "exc": str(exc)}
        ) from None
    check_loaded(model, Path(path))  # external data inside the model's folder; its IR version kept
    inits = {i.name for i in model.graph.initializer}
    return tuple((i.name, i.type.tensor_type.elem_type,
                  tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in i.type.tensor_type.shape.dim))
                 for i in model.graph.input if i.name not in inits)


def onnx_graph_inputs(path: Path) -> list[tuple[str, str, list[int | str | None]]]:
    """(name, dtype, dims) of each input an ONNX file takes (initializers left out); a dim is an
    int, its symbolic name, or None when it has neither."""
    out = []
    for name, elem_type, dims in onnx_file_inputs(path):
        dtype = ONNX_DTYPES.get(elem_type)
        if dtype is None:
            import onnx

            raise model_error("input '{name}' of {path} has ONNX element type {t}; infer-orch feeds "
                              "float32, float16, bfloat16, int64, int32 and bool",
                              name=name, path=str(path), t=onnx.TensorProto.DataType.Name(elem_type))
        out.append((name, dtype, list(dims)))
    return out
