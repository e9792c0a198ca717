"""Models with several named inputs (the ``inputs`` form: a ``python:`` factory or an ONNX file)
and a model's named axes: each input's dtype, shape (ints and axis names) and fill, checked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import ValidationError

from orchestrator.plan.messages import describe, model_error
from orchestrator.plan.onnxfile import onnx_graph_inputs
from workers.config import StrictModel, did_you_mean
from workers.contract import MAX_DIM

INPUTS_FORM_KEYS = ("inputs", "axes", "axes_map", "pass_inputs")
_FLOATS = ("float32", "float16", "bfloat16")
UNNAMED = "?"


class InputFields(TypedDict):
    """An ``InputSpec``'s fields for one input, checked."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    fill: str
    low: float | None
    high: float | None
    value: float | None


class ModelFields(TypedDict, total=False):
    """``ModelSpec`` fields of a model as the plan wrote it (keys it doesn't know pass through, for
    ``ModelSpec`` to refuse by name)."""

    kind: str
    ref: str
    name: str
    input_shape: Any  # as the plan wrote it: ModelSpec checks it
    input_name: str
    inputs: list[InputFields]
    axes: dict[str, int]
    pass_inputs: str
    overrides: dict[str, bool | int | float | str]


class PlanInput(StrictModel):
    """One entry of a model's ``inputs`` as the plan writes it (an ONNX file's supplies the rest)."""

    name: str
    dtype: Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"] | None = None
    shape: list[int | str] | None = None
    fill: Literal["normal", "randint", "ones", "zeros", "constant"] | None = None
    low: float | None = None
    high: float | None = None
    value: float | None = None


def uses_inputs_form(kind: str, ref: str, rest: dict[str, Any], base_dir: str) -> bool:
    """The inputs form: asked for by its keys, or an ONNX file the one-input form can't feed
    (several inputs, or one that is not floating point)."""
    if any(k in rest for k in INPUTS_FORM_KEYS):
        return True
    if kind != "onnx" or "input_shape" in rest:
        return False
    path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
    if not path.is_file():
        return False  # the one-input path says it is missing
    found = onnx_graph_inputs(path)
    return len(found) != 1 or found[0][1] not in ("float32", "float16")


def _default_fill(name: str, dtype: str) -> str:
    """Attention masks are ones (a random 0/1 mask can blank whole rows and give NaN); floats are
    normal; integers are random in [low, high); booleans are ones."""
    if "mask" in name.lower() or dtype == "bool":
        return "ones"
    return "normal" if dtype in _FLOATS else "randint"


def _input_entry(where: str, raw: PlanInput, dtype: str, shape: list[int | str]) -> InputFields:
    """An ``InputSpec``'s fields for one input, its fill checked against its dtype."""
    fill = raw.fill or _default_fill(raw.name, dtype)
    low, high = raw.low, raw.high
    if fill == "normal" and dtype not in _FLOATS:
        raise model_error("{where}: fill normal is for floating-point inputs; this one is {dtype} (use randint, ones, "
                          "zeros or constant)", where=where, dtype=dtype)
    if fill == "randint":
        if dtype in _FLOATS:
            raise model_error("{where}: fill randint is for integer inputs; this one is {dtype}", where=where,
                              dtype=dtype)
        if dtype == "bool":
            low, high = (0 if low is None else low), (2 if high is None else high)
        if high is None:
            raise model_error("{where}: an integer input filled with randint needs high (values are drawn from "
                              "[low, high), low default 0): for token ids, the vocabulary size", where=where)
        low = 0 if low is None else low
        if low >= high:
            raise model_error("{where}: empty integer bounds: low {low} >= high {high} (values are drawn from "
                              "[low, high))", where=where, low=f"{low:g}", high=f"{high:g}")
    if fill == "constant" and raw.value is None:
        raise model_error("{where}: fill constant needs value", where=where)
    for d in shape:
        if isinstance(d, int) and not 1 <= d <= MAX_DIM or isinstance(d, str) and not d.isidentifier():
            raise model_error("{where}: shape {shape}: each dim is an int from 1 to {most} or an axis name",
                              where=where, shape=list(shape), most=MAX_DIM)
    return {"name": raw.name, "dtype": dtype, "shape": tuple(shape), "fill": fill, "low": low, "high": high,
            "value": raw.value}


def _plan_inputs(raw: Any) -> list[PlanInput]:
    if not isinstance(raw, list) or not raw:
        raise model_error("inputs: a list of inputs, each {{name, dtype, shape, fill}}")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(PlanInput.model_validate(item))
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = "".join(f".{p}" for p in e["loc"])
            raise model_error("inputs[{i}]{loc}: {msg}", i=i, loc=loc, msg=describe(e)) from None
    names = [p.name for p in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise model_error("inputs: '{name}' is listed twice", name=dup)
    return out


def model_axes(rest: dict[str, Any]) -> dict[str, int]:
    """A model's own ``axes`` (taken out of ``rest``): fixed values of its named axes, checked."""
    axes = rest.pop("axes", {}) or {}
    if not isinstance(axes, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                             and 1 <= v <= MAX_DIM for k, v in axes.items()):
        raise model_error("axes: a mapping of axis name to an int from 1 to {most}, e.g. {{seq: 128}} (to sweep "
                          "values, use matrix.axes)", most=MAX_DIM)
    if "batch" in axes:
        raise model_error("axes: batch is the batch axis: its values are matrix.batch_sizes")
    return axes


def inputs_form_model(kind: str, ref: str, rest: dict[str, Any], base_dir: str) -> ModelFields:
    """ModelSpec fields for a model of the inputs form (a ``python:`` factory or an ONNX file)."""
    rest = dict(rest)
    if kind == "torchvision":
        raise model_error("torchvision models take one image input: {keys} are for python: and onnx: models",
                          keys=", ".join(k for k in INPUTS_FORM_KEYS if k in rest))
    if "input_shape" in rest and "inputs" in rest:
        raise model_error("give either input_shape (one float input) or inputs, not both")
    axes = model_axes(rest)
    axes_map = rest.pop("axes_map", {}) or {}
    if not isinstance(axes_map, dict) or not all(isinstance(v, str) for v in axes_map.values()):
        raise model_error("axes_map: a mapping of the ONNX file's dim name to a plan axis, e.g. {{sequence: seq}}")
    if axes_map and kind != "onnx":
        raise model_error("axes_map renames an ONNX file's dims; a python model names its axes in inputs")
    pass_inputs = rest.pop("pass_inputs", "kwargs")
    if pass_inputs not in ("kwargs", "positional"):
        raise model_error("pass_inputs: kwargs (forward(name=tensor, ...)) or positional (forward(t0, t1, ...)), "
                          "got {got}", got=str(pass_inputs))
    if pass_inputs != "kwargs" and kind != "python":
        raise model_error("pass_inputs is for python models; an ONNX file's inputs are fed by name")
    raw = _plan_inputs(rest.pop("inputs")) if "inputs" in rest else None
    if kind == "python":
        if raw is None:
            given = ", ".join(k for k in INPUTS_FORM_KEYS if k in {"axes": axes, "pass_inputs": 1}) or "axes"
            raise model_error("python model '{ref}': {keys} need inputs (a list of {{name, dtype, shape}})", ref=ref,
                              keys=given)
        inputs = []
        for i, p in enumerate(raw):
            if p.shape is None:
                raise model_error("inputs[{i}] ({name}): a python model's input needs a shape, e.g. [batch, seq]",
                                  i=i, name=p.name)
            inputs.append(_input_entry(f"inputs[{i}] ({p.name})", p, p.dtype or "float32", p.shape))
        name = rest.pop("name", ref.partition(":")[2])
    else:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        if not path.is_file():
            raise model_error("ONNX file not found: {path}", path=str(path))
        ref = str(path.resolve())
        inputs = _onnx_inputs(ref, onnx_graph_inputs(path), raw or [], axes_map)
        name = rest.pop("name", path.stem)
    if "input_shape" in rest:
        raise model_error("input_shape is the one-input form; with inputs, each input has its shape")
    return {"kind": kind, "ref": ref, "name": name, "inputs": inputs, "axes": axes, "pass_inputs": pass_inputs,
            **rest}


def _onnx_inputs(ref: str, found: list[tuple[str, str, list[int | str | None]]], raw: list[PlanInput],
                 axes_map: dict[str, str]) -> list[InputFields]:
    """The file's inputs with the plan's declarations applied: dims named by the file become plan axes
    (a leading dim every input shares is ``batch``; ``axes_map`` renames the others)."""
    names = [n for n, _, _ in found]
    by_name = {p.name: p for p in raw}
    for i, p in enumerate(raw):
        if p.name not in names:
            raise model_error("inputs[{i}]: the ONNX model {ref} has no input '{name}'{hint}; its inputs: {names}",
                              i=i, ref=ref, name=p.name, hint=did_you_mean(p.name, names), names=", ".join(names))
    leads = {dims[0] if dims else None for _, _, dims in found}
    batch_dim = next(iter(leads)) if len(leads) == 1 and isinstance(next(iter(leads)), str) else None
    out = []
    for name, dtype, dims in found:
        p = by_name.get(name, PlanInput(name=name))
        where = f"input '{name}'"
        if p.dtype is not None and p.dtype != dtype:
            raise model_error("inputs[{i}] ({name}): dtype {plan} contradicts the ONNX model, whose input is {file}",
                              i=raw.index(p), name=name, plan=p.dtype, file=dtype)
        shape: list[int | str] = []
        for k, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif d is None or d == 0:
                shape.append(UNNAMED)
            elif d in axes_map:
                shape.append(axes_map[d])
            else:
                shape.append("batch" if k == 0 and d == batch_dim else d)
        if p.shape is not None:
            if len(p.shape) != len(shape):
                raise model_error("inputs[{i}] ({name}): shape {plan} has {n} dims; the ONNX model's input has {m}",
                                  i=raw.index(p), name=name, plan=list(p.shape), n=len(p.shape), m=len(shape))
            for k, (mine, file) in enumerate(zip(p.shape, shape)):
                if isinstance(file, int) and mine != file:
                    raise model_error("inputs[{i}] ({name}): dim {k} is {plan}; the ONNX model fixes it to {file}",
                                      i=raw.index(p), name=name, k=k, plan=mine, file=file)
            shape = list(p.shape)
        if UNNAMED in shape:
            k = shape.index(UNNAMED)
            raise model_error("{where} of {ref}: dim {k} has no size and no name in the file; declare it: inputs: "
                              "[{{name: {name}, shape: [...]}}] with an int or an axis name there",
                              where=where, ref=ref, k=k, name=name)
        out.append(_input_entry(where, p, dtype, shape))
    return out

