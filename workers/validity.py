"""One verdict per row: is this number one to act on?

A row can be ``ok`` (it ran, its output passed parity) and still not be a figure to decide by: it
did not converge, another process used the GPU while it was timed, it is too noisy, its repeats
disagree, or (a server scenario) the schedule was not kept. :func:`verdict` gives every row
``valid`` and ``invalid_reasons``; this module is the one place those rules live.

- ``valid`` is null for rows with no measurement (failed, skipped, timeout, ...).
- ``invalid_reasons`` is a list of short codes with their figures, e.g.
  ``"noisy: IQR/median 14.2% > 10%"``; empty when ``valid``.

Rules come in groups, each a function of the row (and the trial that made it):
``measurement_reasons`` (any scenario: convergence, contention, noise, repeats) and
``scenario_reasons`` (the load scenario's own rules, e.g. a server run's achieved rate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from workers.contract import Trial

COLUMNS = ("valid", "invalid_reasons")


def measurement_reasons(row: dict[str, Any], trial: Trial) -> list[str]:
    """Why the timing itself can't be trusted, whatever the scenario."""
    return []


def scenario_reasons(row: dict[str, Any], trial: Trial) -> list[str]:
    """Why the load scenario's own conditions were not met (single-stream has none)."""
    return []


def verdict(row: dict[str, Any], trial: Trial) -> dict[str, Any]:
    """The row's ``valid`` and ``invalid_reasons`` columns."""
    if row.get("status") != "ok":
        return dict.fromkeys(COLUMNS)
    reasons = measurement_reasons(row, trial) + scenario_reasons(row, trial)
    return {"valid": not reasons, "invalid_reasons": reasons}
