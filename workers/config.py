"""The base of every typed configuration object (plans and backend options)."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def did_you_mean(value: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` with the choice closest to ``value``, or "" when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class StrictModel(BaseModel):
    """Frozen, and rejects unknown keys with a 'did you mean' and the list of known keys. Its numbers
    are finite: an infinite or NaN time, tolerance or rate is refused rather than given a meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in known:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'{hint}; expected one of: {known}",
                        {"key": key, "hint": did_you_mean(key, known), "known": ", ".join(known) or "none"},
                    )
        return data
