"""What every command shares: the consoles, and the one error boundary (an ``InferOrchError`` ->
its one line on stderr and its exit code)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from orchestrator.errors import InferOrchError, Interrupted

# Piped output (CI logs, files) gets a wide table rather than Rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

#: Set when a run was stopped while Ray was starting: the command then ends without the interpreter's
#: clean-up (see ``main``).
END_NOW: list[bool] = []


def fail(exc: InferOrchError) -> typer.Exit:
    if getattr(exc, "starting", False):
        END_NOW.append(True)
    prefix = "" if isinstance(exc, Interrupted) else "[bold red]error:[/] "
    for line in str(exc).splitlines():
        err_console.print(f"{prefix}{escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=exc.exit_code)


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

