"""``infer-orch backends``: what this machine or cluster can run."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.errors import InferOrchError


def backends(
    address: Annotated[str | None, typer.Option(help="Ray cluster to inspect (default: this machine).")] = None,
) -> None:
    """What this machine (or cluster) can run: GPUs, ORT providers, backends, versions."""
    from orchestrator.run.inspect import describe

    try:
        info = describe(address)
    except InferOrchError as exc:
        raise fail(exc) from None
    t = Table(title="Backends", title_justify="left")
    t.add_column("backend")
    t.add_column("available")
    t.add_column("dtypes (cuda / cpu)")
    t.add_column("scenarios")
    t.add_column("note")
    for b in info["backends"]:
        t.add_row(b["name"], "yes" if b["available"] else "[red]no[/]", b["dtypes"], b["scenarios"],
                  escape(b["note"]))
    console.print(t)
    n = Table(title="Nodes", title_justify="left")
    for col in ("node", "CPUs", "GPUs", "GPU models"):
        n.add_column(col)
    for node in info["nodes"]:
        n.add_row(node["host"], str(node["cpus"]), str(node["gpus"]), ", ".join(node["gpu_models"]) or "-")
    console.print(n)
    for k, v in info["versions"].items():
        console.print(f"{k}: {v}", highlight=False)
