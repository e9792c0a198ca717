"""Loading a plan: the YAML read with a safe loader (``PlanLoader``: ``yaml.safe_load``'s, refusing
a key given twice), validated into a ``Plan`` (``orchestrator.plan.schema``), then checked as a
whole (``orchestrator.plan.checks``). Every error is a ``PlanError`` of located one-line messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import PlanError
from orchestrator.plan import checks, generation
from orchestrator.plan.messages import format_errors
from orchestrator.plan.schema import Plan, backend_entry_type


def _parse_backends(raw: Any) -> Any:
    """Expand the ``- torch-eager`` shorthand to ``{backend: torch-eager}``."""
    if isinstance(raw, list):
        return [{"backend": b} if isinstance(b, str) else b for b in raw]
    return raw


def parse_plan(data: Any, source: str = "<plan>", base_dir: str = ".") -> Plan:
    """Validate an already-loaded YAML document into a Plan, or raise PlanError."""
    if not isinstance(data, dict):
        raise PlanError(
            f"{source}: a plan must be a mapping of keys (name, models, matrix, ...), got {type(data).__name__}"
        )
    raw, data = data, dict(data)
    aliases: dict[str, str] = {}
    if isinstance(data.get("matrix"), dict):
        matrix = dict(data["matrix"])
        matrix["backends"] = _parse_backends(matrix.get("backends"))
        checks.check_backend_forms(matrix["backends"], source)
        aliases = {k[:-5]: k for k in matrix if isinstance(k, str) and k.endswith("_lens") and len(k) > 5
                   and k not in generation.MATRIX_KEYS}
        data["matrix"] = checks.axes_shorthand(matrix, source)
    try:
        plan = Plan.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise PlanError(format_errors(source, exc, prefix=(), aliases=aliases)) from None
    try:
        entries = TypeAdapter(list[backend_entry_type()]).validate_python(plan.matrix.backends)
    except ValidationError as exc:
        raise PlanError(format_errors(source, exc, prefix=("matrix", "backends"))) from None
    checks.check_int64(raw, source)
    checks.check_repeats(plan, entries, aliases, source)
    checks.check_labels(entries, source)
    checks.check_timeouts(plan, entries, source)
    plan = generation.check(plan, entries, source)  # before the axes: a model that does not generate says so
    checks.check_axes(plan, source, aliases)
    checks.check_hf_axes(plan, source)
    checks.check_scenarios(plan, entries, source)
    matrix = plan.matrix.model_copy(update={"backends": entries})
    return plan.model_copy(update={"matrix": matrix})


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"{line}: duplicate key {key!r} (first at line {first}); give each key once")


class PlanLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """``yaml.safe_load``'s loader (libyaml's parser where installed: 4x faster on large plans)
    that refuses a key given twice in one mapping, at any depth: YAML keeps the last silently."""

    def flatten_mapping(self, node: Any) -> None:
        # called on every mapping before its construction and before merge keys (<<) change it
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)  # a scalar: hashable
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKey(key, line, seen[key])
                seen[key] = line
        super().flatten_mapping(node)

    @property
    def _checked(self) -> set[int]:
        if not hasattr(self, "_checked_ids"):
            self._checked_ids: set[int] = set()
        return self._checked_ids


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file. Raises PlanError with a located message."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"{p}: plan file not found" if not p.exists() else f"{p}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: can't read the plan: {exc}") from None
    try:
        data = yaml.load(text, Loader=PlanLoader)  # noqa: S506 (a safe loader: PlanLoader is yaml's SafeLoader)
    except DuplicateKey as exc:
        raise PlanError(f"{p}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(f"{p}{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise PlanError(f"{p}: the plan is empty")
    return parse_plan(data, source=str(p), base_dir=str(p.parent))
