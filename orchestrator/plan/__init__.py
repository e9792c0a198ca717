"""Plans: the YAML file's typed models, its checks and messages, and the expansion into trials.

- ``schema``: the typed, frozen models (``Plan``, ``Matrix``, ``BackendEntry``, ...);
- ``forms``, ``inputs``, ``onnxfile``: a model as a plan writes it, its inputs and an ONNX file's header;
- ``settings``: a backend entry's scenario settings, merged and checked;
- ``checks``, ``messages``, ``load``: the whole-plan checks, the one-line messages, reading a file;
- ``expand``: a checked plan -> its trials (nothing here imports it back).

``load_plan``, ``parse_plan`` and ``Plan`` are here too, imported when first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Plan", "load_plan", "parse_plan"]


def __getattr__(name: str) -> Any:
    # Lazy: importing one module of the package (an ONNX file's checks) needs no YAML loader.
    if name == "Plan":
        from orchestrator.plan.schema import Plan

        return Plan
    if name in ("load_plan", "parse_plan"):
        from orchestrator.plan import load

        return getattr(load, name)
    raise AttributeError(f"module 'orchestrator.plan' has no attribute {name!r}")
