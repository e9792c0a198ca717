"""A model as a plan writes it -> ``ModelSpec`` fields: the shorthand (``torchvision:resnet18``,
``model.onnx``) and mapping forms of torchvision, python, onnx and hf models. Models of several
named inputs (the ``inputs`` form) are in ``orchestrator.plan.inputs``; an ONNX file's header is
read by ``orchestrator.plan.onnxfile``."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from orchestrator.plan.inputs import InputFields, ModelFields, inputs_form_model, model_axes, uses_inputs_form
from orchestrator.plan.messages import model_error
from orchestrator.plan.onnxfile import onnx_file_inputs, onnx_input_shape
from workers.models import zoo


def model_from_yaml(item: Any, base_dir: str) -> Any:
    """Turn the shorthand and mapping forms of a model into ModelSpec fields (or leave for errors)."""
    if isinstance(item, str):
        if item.startswith(("torchvision:", "python:", "onnx:", "hf:", "hf-causal:")):
            kind, _, ref = item.partition(":")
            item = {kind: ref}
        elif item.endswith(".onnx"):
            item = {"onnx": item}
        else:
            raise PydanticCustomError(
                "model_form",
                "'{item}' is not a model: expected torchvision:<name>, hf:<architecture>, hf-causal:<decoder>, "
                "python:<module>:<factory> or a .onnx path",
                {"item": item},
            )
    if not isinstance(item, dict):
        return item
    kinds = [k for k in ("torchvision", "onnx", "python", "hf", "hf-causal") if k in item]
    if len(kinds) != 1:
        if "kind" in item:
            return item
        raise PydanticCustomError(
            "model_form",
            "a model mapping needs exactly one of the keys torchvision, onnx, python, hf, hf-causal (got: {keys})",
            {"keys": ", ".join(map(str, item)) or "none"},
        )
    kind = kinds[0]
    rest = {k: v for k, v in item.items() if k != kind}
    if "input_name" in rest:  # set from an ONNX file, not by the plan
        raise model_error("unknown key 'input_name'; a model mapping takes {kind}, name, input_shape, inputs, axes, "
                          "axes_map, pass_inputs", kind=kind)
    ref = str(item[kind]).strip()
    if kind == "hf-causal":  # generation trials: orchestrator.plan.causal
        from orchestrator.plan import causal

        return causal.model_fields(ref, rest, base_dir)
    if kind == "hf":
        return _hf_model(ref, rest, base_dir)
    if "overrides" in rest:
        raise model_error("overrides: config values of an hf: model's architecture; a {kind} model has none", kind=kind)
    if uses_inputs_form(kind, ref, rest, base_dir):
        return inputs_form_model(kind, ref, rest, base_dir)
    if kind == "torchvision":
        _check_torchvision(ref)
        shape = rest.pop("input_shape", zoo.default_shape(ref))
        name = rest.pop("name", ref)
    elif kind == "python":
        module, sep, attr = ref.partition(":")
        if not sep or not all(p.isidentifier() for p in module.split(".")) or not attr.isidentifier():
            raise PydanticCustomError(
                "model_form", "python model '{ref}' must be written package.module:factory", {"ref": ref}
            )
        if "input_shape" not in rest:
            raise PydanticCustomError("model_form", "python model '{ref}' needs an input_shape", {"ref": ref})
        shape = rest.pop("input_shape")
        name = rest.pop("name", attr)
    else:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        ref = str(path.resolve())
        file_shape = onnx_input_shape(path)
        shape = rest.pop("input_shape", file_shape)
        if shape is None:
            raise PydanticCustomError(
                "model_form",
                "the ONNX model {ref} has symbolic input dimensions; declare input_shape",
                {"ref": ref},
            )
        if file_shape is not None and tuple(shape) != tuple(file_shape):
            raise PydanticCustomError(
                "model_form",
                "input_shape {declared} does not match the ONNX model's input {found} in {ref}",
                {"declared": list(shape), "found": list(file_shape), "ref": ref},
            )
        name = rest.pop("name", path.stem)
        rest["input_name"] = onnx_file_inputs(path)[0][0]  # the inputs column names it as the file does
    return {"kind": kind, "ref": ref, "name": name, "input_shape": shape, **rest}


def _hf_model(ref: str, rest: dict[str, Any], base_dir: str) -> ModelFields:
    """ModelSpec fields of an ``hf:`` model: its inputs from the architecture's table entry
    (``workers.models.hf``), token ids drawn below its vocabulary size; no transformers import."""
    from workers.models import hf

    rest = dict(rest)
    found = hf.arch_of(ref, base_dir)
    if found is None:
        close = difflib.get_close_matches(ref, list(hf.ARCHS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise model_error("hf:{ref} is not a known architecture ({names}) nor a local model folder with a config.json "
                          "of one of their model types{hint}", ref=ref, names=", ".join(hf.ARCHS), hint=hint)
    arch_name, arch, local = found
    if local:
        path = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
        ref = str(path.resolve())
    overrides = rest.pop("overrides", {}) or {}
    if not isinstance(overrides, dict) or not all(
            isinstance(v, (int, float, str, bool)) for v in overrides.values()):
        raise model_error("hf:{ref}: overrides: a mapping of config key to a number, string or boolean, e.g. "
                          "{{num_hidden_layers: 2}}", ref=ref)
    unknown = [k for k in overrides if k not in arch.overridable]
    if unknown:
        raise model_error("hf:{ref}: overrides.{key}: not a config key infer-orch lets a plan change for {arch} "
                          "(it may: {keys})", ref=ref, key=unknown[0], arch=arch_name, keys=", ".join(arch.overridable))
    for k in ("inputs", "input_shape", "axes_map", "pass_inputs"):
        if k in rest:
            raise model_error("hf:{ref}: {key}: an hf model's inputs come from its architecture ({names}); set "
                              "sequence lengths with axes: {{seq: N}} or matrix.seq_lens", ref=ref, key=k,
                              names=", ".join(i["name"] for i in arch.inputs))
    axes = model_axes(rest)
    conf = hf.settings(arch, local, overrides)
    if "image" in conf:
        axes = {"image": conf["image"], **axes}
    inputs: list[InputFields] = []
    for i in arch.inputs:
        randint = i["fill"] == "randint"
        inputs.append({**i, "shape": tuple(i["shape"]), "low": 0 if randint else None,
                       "high": conf["vocab_size"] if randint else None, "value": None})
    name = rest.pop("name", Path(ref).name if local else ref)
    return {"kind": "hf", "ref": ref, "name": name, "inputs": inputs, "axes": axes, "overrides": overrides, **rest}


def _check_torchvision(ref: str) -> None:
    if ref in zoo.NAMES:  # the table: the driver imports no torchvision for a name it knows
        return
    known = zoo.torchvision_names()  # another torchvision version may know it (that costs one import)
    if ref not in known:
        close = difflib.get_close_matches(ref, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PydanticCustomError(
            "model_name", "unknown torchvision model '{ref}'{hint}", {"ref": ref, "hint": hint}
        )

