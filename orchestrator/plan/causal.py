"""The hf-causal model form of a plan (a decoder with random weights, its sizes checked with no torch import)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from workers.generation.models import CAUSAL, GenerationInputError, shape_of

KIND = "hf-causal"


def model_fields(ref: str, rest: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """ModelSpec fields of an ``hf-causal:`` model (its sizes checked, nothing imported)."""
    extra = sorted(set(rest) - {"name", "overrides"})
    if extra:
        raise PydanticCustomError("model_form", "hf-causal:{ref}: unknown key '{key}'; an hf-causal model takes "
                                  "name and overrides (its prompts come from matrix.prompt_lens)",
                                  {"ref": ref, "key": extra[0]})
    overrides = rest.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, int | float | str | bool) for v in overrides.values()):
        raise PydanticCustomError("model_form", "hf-causal:{ref}: overrides: a mapping of config key to a number, "
                                  "string or boolean, e.g. {{num_hidden_layers: 2}}", {"ref": ref})
    try:
        shape_of(ref, overrides, base_dir)
    except GenerationInputError as exc:
        msg = message_of(exc).removeprefix(f"{ref}: ")  # a folder's message starts with the folder
        raise PydanticCustomError("model_form", "hf-causal:{ref}: {msg}", {"ref": ref, "msg": msg}) from None
    local = ref not in CAUSAL
    if local:
        ref = str((Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref).resolve())
    name = rest.get("name", Path(ref).name if local else ref)
    return {"kind": KIND, "ref": ref, "name": name, "overrides": overrides}


def message_of(exc: GenerationInputError) -> str:
    """The message without the key it starts with (the caller locates it)."""
    return str(exc).removeprefix(f"{exc.key}: ")
