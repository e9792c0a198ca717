"""A plan's error messages: a location as the plan writes it (``matrix.backends[2].options.x``),
a value as YAML writes it, pydantic's errors reworded into one line each."""

from __future__ import annotations

import re
import reprlib
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from workers.config import did_you_mean


def model_error(msg: str, **ctx: Any) -> PydanticCustomError:
    """A model's error; ``msg`` a ``str.format`` template (``{{`` for a brace: pydantic's own
    templates keep it doubled), formatted here."""
    return PydanticCustomError("model_form", msg.format(**ctx))


def format_loc(loc: tuple[Any, ...]) -> str:
    """('matrix', 'backends', 2, 'ort', 'options', 'x') -> 'matrix.backends[2].options.x'."""
    out = ""
    prev: Any = None
    for part in loc:
        in_backends = out.startswith("matrix.backends") and isinstance(prev, int)
        if isinstance(part, int):
            out += f"[{part}]"
        elif in_backends and part in _backend_names():
            pass  # the discriminator's tag: the index already says which entry
        elif str(part).startswith("function-") or _is_union_tag(part):
            pass
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out or "(top level)"


_UNION_TAG = re.compile(r"^(int|float|str|bool|none|(list|tuple|dict|literal)\[.*\])$")


def _is_union_tag(part: Any) -> bool:
    """Whether a location part names a member of a union (``int`` of ``int | list[int]``), not a key."""
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 3, 4, 4
_SHORT.maxstring = _SHORT.maxlong = _SHORT.maxother = 56


def yaml_repr(value: Any) -> str:
    """A value as the plan would write it: null, true, 'abc', [1, 2] (long or deep ones cut, never
    written out whole: a YAML alias bomb is billions of items)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _backend_names() -> set[str]:
    from workers.backends import registry

    return set(registry())


#: Validator messages reworded where they speak the validator's language (a class name, "after
#: validation", "Field"); the others ("Input should be greater than 0") already say what is accepted.
_REWORDED = {
    "int_parsing": "Input should be a valid integer", "float_parsing": "Input should be a valid number",
    "model_type": "Input should be a valid dictionary", "model_attributes_type": "Input should be a valid dictionary",
    "dataclass_type": "Input should be a valid dictionary",
    "too_short": "Input should have at least {min_length} {items}",
    "too_long": "Input should have at most {max_length} {items}",
    "missing": "this key is required",
}


def describe(err: ErrorDetails) -> str:
    msg = err["msg"]
    kind = err["type"]
    ctx = err.get("ctx", {})
    if kind in ("union_tag_invalid",):
        from workers.backends import registry

        tag = ctx.get("tag", "")
        return f"unknown backend '{tag}'{did_you_mean(tag, registry())}; known: {', '.join(sorted(registry()))}"
    if kind == "union_tag_not_found":
        from workers.backends import registry

        return f"an entry needs `backend:`, one of: {', '.join(sorted(registry()))}"
    if kind in _REWORDED:
        n = ctx.get("min_length", ctx.get("max_length"))
        msg = _REWORDED[kind].format(**{**ctx, "items": "item" if n == 1 else "items"})
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind not in ("unknown_key", "model_form", "model_name", "model_file", "missing", "value_error"):
        msg += f" (got {yaml_repr(err.get('input'))})"
    return msg


def format_errors(source: str, exc: ValidationError, prefix: tuple[Any, ...],
                   aliases: dict[str, str] | None = None) -> str:
    """One line per error, located as the plan wrote it: union members (``int | list[int]``) give one
    line for the member the value was meant for; ``aliases`` maps a named axis to its shorthand key."""
    lines = []
    for err, extra in _union_errors(exc.errors()):
        loc = prefix + tuple(err["loc"])
        if loc[:2] == ("matrix", "axes") and len(loc) > 2 and loc[2] in (aliases or {}):
            loc = ("matrix", (aliases or {})[loc[2]], *loc[3:])
        message = describe(err).replace(" (got", f"{extra} (got", 1) if extra else describe(err)
        lines.append(f"{source}: {format_loc(loc)}: {message}")
    return "\n".join(dict.fromkeys(lines))


def _union_errors(errors: list[Any]) -> list[tuple[Any, str]]:
    """The errors of a value of ``X | list[X]``, reduced to the member it was meant for: the list
    member's where the value is a list, else the scalar's (saying "or a list of them"); each with
    that extra wording ("" for errors not in such a union)."""
    groups: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}
    out: list[tuple[Any, str]] = []
    for err in errors:
        k = next((i for i, part in enumerate(err["loc"]) if _is_union_tag(part)), None)
        if k is None:
            out.append((err, ""))
            continue
        groups.setdefault(tuple(err["loc"][:k]), []).append((str(err["loc"][k]), err))
    for point, members in groups.items():
        lists = [e for tag, e in members if tag.startswith("list[")]
        scalars = [e for tag, e in members if not tag.startswith("list[")]
        in_list = [e for e in lists if not (e["type"] == "list_type" and len(e["loc"]) == len(point) + 1)]
        if in_list or not scalars:
            out += [(e, "") for e in in_list or lists]
        else:
            out += [(e, " or a list of them" if lists else "") for e in _merged(scalars)]
    return out


def _merged(errors: list[Any]) -> list[Any]:
    """The scalar members' errors at one place as one: ``bool | int | str`` given a list says
    "Input should be a valid boolean, integer or string", not three lines."""
    here = [e for e in errors if len(e["loc"]) == len(errors[0]["loc"])]
    if len(here) < 2:
        return errors
    wants = [describe(e).partition(" (got")[0].removeprefix("Input should be ").removeprefix("a valid ")
             for e in here]
    what = ", ".join(wants[:-1]) + " or " + wants[-1]
    prefix = "a valid " if all(describe(e).startswith("Input should be a valid ") for e in here) else ""
    merged = {**here[0], "type": "union_members", "msg": f"Input should be {prefix}{what}", "ctx": {}}
    return [merged, *(e for e in errors if e not in here)]
