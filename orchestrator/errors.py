"""One exception hierarchy for infer-orch; the CLI maps it to exit codes at one boundary.

    InferOrchError                 any error meant for a user: one clear line, no traceback
    ├── InputError                 exit code 2: nothing was run and nothing was written
    │   ├── PlanError              a plan file that can't be read or doesn't validate
    │   ├── ClusterError           Ray can't be reached, or lacks what the plan needs
    │   └── OutputError            the output directory can't be used
    ├── RunError                   exit code 1: the run went ahead but something in it failed
    └── Interrupted                exit code 130: Ctrl-C; results so far kept, resumable

Errors raised inside a trial never reach this hierarchy: they become the trial's row
(``status: failed`` with the error), so one bad trial never takes a run down.
"""

from __future__ import annotations


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


class Interrupted(InferOrchError):
    """The user stopped the run (Ctrl-C): what ran is stored; the message says how to resume."""

    exit_code = 130
