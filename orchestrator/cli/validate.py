"""``infer-orch validate``: check plans and count their trials; touches no device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.console import console, fail, warn
from orchestrator.errors import InferOrchError


def validate(
    plans: Annotated[list[Path], typer.Argument(help="YAML plan files.", show_default=False)],
    address: Annotated[str | None, typer.Option(
        help="The plans are for this Ray cluster (contacted: no): a python: model's module missing here is a "
             "warning, not an error, since the cluster's nodes may have it.")] = None,
) -> None:
    """Check each PLAN and print how many trials it expands to. Touches no device.

    Every plan is checked, also after a bad one; the exit code is that of the first bad plan.
    """
    from orchestrator.plan.expand import expand
    from orchestrator.plan.load import load_plan
    from orchestrator.run.shipping import check_factories

    first_error: InferOrchError | None = None
    for plan in plans:
        try:
            plan_obj = load_plan(plan)
            trials = expand(plan_obj, source=str(plan))
            check_factories(plan_obj.models, str(plan), address, warn)
        except InferOrchError as exc:
            fail(exc)
            first_error = first_error or exc
            continue
        console.print(f"{plan}: valid, {len(trials)} trials", highlight=False)
    if first_error is not None:
        raise typer.Exit(code=first_error.exit_code)
