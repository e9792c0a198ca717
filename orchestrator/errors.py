"""One exception hierarchy for infer-orch; the CLI maps it to exit codes at one boundary.

    InferOrchError                 any error meant for a user: one clear line, no traceback
    ├── InputError                 exit code 2: nothing was run and nothing was written
    │   ├── PlanError              a plan file that can't be read or doesn't validate
    │   ├── ClusterError           Ray can't be reached, or lacks what the plan needs
    │   └── OutputError            the output directory can't be used
    ├── RunError                   exit code 1: the run went ahead but something in it failed
    │   └── ResultWriteError       a result file could not be written (full disk, file-size limit)
    └── Interrupted                exit code 130 (Ctrl-C) or 143 (SIGTERM); results so far kept, resumable

Errors raised inside a trial never reach this hierarchy: they become the trial's row
(``status: failed`` with the error), so one bad trial never takes a run down.
"""

from __future__ import annotations

import os


class InferOrchError(Exception):
    """An error whose message is meant for the user as it is."""

    exit_code = 1


class InputError(InferOrchError):
    exit_code = 2


class PlanError(InputError):
    """A plan that can't be read or is invalid. ``str()`` names the file and the key path."""


class ClusterError(InputError):
    """Ray could not be reached, or the cluster lacks what the plan asks for."""


class OutputError(InputError):
    """The output directory can't be created or written."""


class RunError(InferOrchError):
    exit_code = 1


class ResultWriteError(RunError):
    """A part file could not be written (ENOSPC, EFBIG, ...): the run stops; the parts written
    before it are whole (each is renamed into place only once complete) and ``--resume`` goes on."""


class Interrupted(InferOrchError):
    """The user stopped the run (Ctrl-C, or SIGTERM from a scheduler or CI runner): what ran is
    stored; the message says how to resume. Exit code 130 for Ctrl-C, 143 (128 + 15) for SIGTERM."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by infer-orch's handler: it takes Ctrl-C's way out (a ``KeyboardInterrupt``,
    so every ``finally`` and every worker clean-up on that path runs) and exits 143."""

    exit_code = 143


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name`` (``default`` when unset);
    anything else is an InputError (exit 2) that names the variable and its value."""
    raw = os.environ.get(name)
    try:
        seconds = default if raw is None else float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # also NaN
        raise InputError(f"{name}={raw!r}: expected a positive number of seconds")
    return seconds


def env_switch(name: str) -> None:
    """An on/off environment variable (``0`` or ``1``; unset is the default): anything else is an
    InputError (exit 2) that names the variable and its value."""
    raw = os.environ.get(name)
    if raw is not None and raw not in ("0", "1"):
        raise InputError(f"{name}={raw!r}: expected 0 (off) or 1 (on)")
